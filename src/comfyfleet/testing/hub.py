"""Websocket clients and message delivery (ComfyUI's PromptServer.send* and publish loop).

Anything may call :meth:`Hub.send_sync` from any thread (the executor runs in a worker thread,
as in ComfyUI); messages go through one asyncio queue and are written in order by one publish
task. ``sid=None`` means every connected client; a sid that is not connected drops the message.
The websocket faults (drop after N messages, refuse reconnects) act here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import uuid
from io import BytesIO
from typing import Any

from aiohttp import web
from PIL import Image, ImageOps

from comfyfleet.testing.faults import Faults

log = logging.getLogger("comfyfleet.testing")

PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


class _Client:
    __slots__ = ("metadata", "sent", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: Any) -> None:
        self.ws = ws
        self.transport = transport
        self.metadata: dict[str, Any] = {"feature_flags": {}}
        self.sent = 0  # messages sent since connect or since the drop fault was armed


def _encode_preview(image_data: tuple[str, Image.Image, int | None]) -> tuple[str, bytes]:
    image_type, image, max_size = image_data
    if max_size is not None:
        image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
    buf = BytesIO()
    image.save(buf, format=image_type, quality=95, compress_level=1)
    return image_type, buf.getvalue()


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop, faults: Faults) -> None:
        self.loop = loop
        self.faults = faults
        self.clients: dict[str, _Client] = {}  # registered sids (who gets messages)
        self._live: set[_Client] = set()  # every open connection (what die() cuts)
        self.messages: asyncio.Queue[tuple[Any, Any, str | None]] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None
        self.closed = False
        faults.on_ws_drop_armed = self._reset_counters

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._publisher = self.loop.create_task(self._publish_loop(), name="comfy-test-publish")

    async def stop(self) -> None:
        self.closed = True
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publisher
        await self.abort_all()

    async def abort_all(self) -> None:
        for client in list(self._live):
            self._abort(client)
        self.clients.clear()
        self._live.clear()

    # -- sending ----------------------------------------------------------------------------

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Queue a message from any thread (ComfyUI's send_sync)."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        client = self.clients.get(sid) if sid is not None else None
        if client is None:
            return False
        return bool(client.metadata.get("feature_flags", {}).get("supports_preview_metadata"))

    async def _publish_loop(self) -> None:
        while True:
            event, data, sid = await self.messages.get()
            while self.faults.freeze and not self.closed:
                await asyncio.sleep(0.02)
            try:
                await self.send(event, data, sid)
            except Exception:  # never let one bad message stop delivery
                log.exception("failed to deliver %r", event)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        if event == UNENCODED_PREVIEW_IMAGE:
            image_type, image_bytes = _encode_preview(data)
            fmt = 2 if image_type == "PNG" else 1
            await self._send_bytes(PREVIEW_IMAGE, struct.pack(">I", fmt) + image_bytes, sid)
        elif event == PREVIEW_IMAGE_WITH_METADATA:
            image_data, metadata = data
            image_type, image_bytes = _encode_preview(image_data)
            metadata = dict(metadata or {})
            metadata["image_type"] = "image/png" if image_type == "PNG" else "image/jpeg"
            meta = json.dumps(metadata).encode("utf-8")
            payload = struct.pack(">I", len(meta)) + meta + image_bytes
            await self._send_bytes(PREVIEW_IMAGE_WITH_METADATA, payload, sid)
        elif isinstance(data, (bytes, bytearray)):
            await self._send_bytes(event, bytes(data), sid)
        else:
            await self._send_json(event, data, sid)

    def _targets(self, sid: str | None) -> list[_Client]:
        if sid is None:
            return list(self.clients.values())
        client = self.clients.get(sid)
        return [client] if client is not None else []

    async def _send_json(self, event: str, data: Any, sid: str | None) -> None:
        text = json.dumps({"type": event, "data": data})
        for client in self._targets(sid):
            await self._deliver(client, text)

    async def _send_bytes(self, event: int, payload: bytes, sid: str | None) -> None:
        message = struct.pack(">I", event) + payload
        for client in self._targets(sid):
            await self._deliver(client, message)

    async def _deliver(self, client: _Client, message: str | bytes) -> None:
        ws = client.ws
        if ws.closed:
            return
        try:
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
        except Exception as e:  # ComfyUI logs and carries on (send_socket_catch_exception)
            log.debug("websocket send failed: %s", e)
            return
        client.sent += 1
        if self.faults.take_ws_drop(client.sent):
            log.info("fault: dropping websocket after %d messages", client.sent)
            self._abort(client)

    @staticmethod
    def _abort(client: _Client) -> None:
        """Cut the connection without a close frame, like a network failure."""
        if client.transport is not None:
            client.transport.abort()

    def _reset_counters(self) -> None:
        for client in list(self.clients.values()):
            client.sent = 0

    # -- the /ws route ----------------------------------------------------------------------

    async def websocket_handler(self, request: web.Request, server: Any) -> web.StreamResponse:
        if self.faults.ws_refused():
            return web.Response(status=503, text="websocket refused (comfyfleet.testing fault)")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.clients.pop(sid, None)  # reusing an existing session: replace the old socket
        else:
            sid = uuid.uuid4().hex
        client = _Client(ws, request.transport)
        self.clients[sid] = client
        self._live.add(client)
        try:
            await self.send("status", {"status": server.queue_info(), "sid": sid}, sid)
            # On reconnect, the currently executing client is told the current node.
            executor = server.executor
            if executor.client_id == sid and executor.last_node_id is not None:
                await self.send("executing", {"node": executor.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type.name == "TEXT":
                    try:
                        data = json.loads(msg.data)
                        if first and data.get("type") == "feature_flags":
                            client.metadata["feature_flags"] = data.get("data", {})
                            await self.send("feature_flags", server.features(), sid)
                        first = False
                    except json.JSONDecodeError:
                        log.warning("invalid JSON from websocket client %s", sid)
                    except Exception as e:
                        log.error("error processing websocket message: %s", e)
        finally:
            # As in ComfyUI: this removes whatever socket is registered under the sid now, even
            # a newer connection that reused the clientId before this one closed.
            self.clients.pop(sid, None)
            self._live.discard(client)
        return ws
