"""ComfyUI's websocket on the gateway: ``/ws?clientId=ID`` carries ComfyUI's messages for the
prompts that client submitted through ``POST /prompt`` (`comfy_compat`), translated from the
tasks' events (`comfyfleet.gateway.comfy_face.Translator`), ending with ``executing {node:
null}`` as ComfyUI does. Other users' prompts are not shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict, deque
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder

from comfyfleet.errors import ComfyFleetError
from comfyfleet.gateway import comfy_face, sse
from comfyfleet.gateway.auth import authorize
from comfyfleet.gateway.views import task_out

router = APIRouter(tags=["ComfyUI-compatible"])


class Clients:
    """Which websocket clients wait for which prompts (per gateway process)."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self.recent: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=64))

    def submitted(self, client_id: str, prompt_id: str) -> None:
        self.recent[client_id].append(prompt_id)
        for inbox in self.listeners.get(client_id, ()):
            inbox.put_nowait(prompt_id)


def clients(app: Any) -> Clients:
    if not hasattr(app.state, "comfy_clients"):
        app.state.comfy_clients = Clients()
    return app.state.comfy_clients


@router.websocket("/ws")
async def websocket(
    socket: WebSocket,
    client_id: Annotated[str | None, Query(alias="clientId")] = None,
    token: str | None = None,
) -> None:
    """ComfyUI's message stream for the prompts this ``clientId`` submitted (others are not
    shown: the fleet's other users are not this client's business)."""
    gateway = socket.app.state.gateway
    header = socket.headers.get("authorization") or (f"Bearer {token}" if token else None)
    host = socket.client.host if socket.client else None
    try:
        authorize(gateway.keys.authenticate(header, host), "read")
    except ComfyFleetError:
        await socket.close(code=1008)
        return
    await socket.accept()
    sid = client_id or uuid.uuid4().hex
    clients_ = clients(socket.app)
    inbox: asyncio.Queue[str] = asyncio.Queue()
    clients_.listeners[sid].add(inbox)
    for prompt_id in list(clients_.recent.get(sid, ())):
        inbox.put_nowait(prompt_id)
    lock = asyncio.Lock()
    followers: set[asyncio.Task[None]] = set()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await socket.send_json(message)

    async def follow(prompt_id: str) -> None:
        translator = comfy_face.Translator(prompt_id)
        base = str(socket.base_url).replace("ws", "http", 1)

        def present(task: Any) -> dict[str, Any]:
            return jsonable_encoder(task_out(task, base))

        async for name, data in sse.task_events(gateway.queue, gateway.events, prompt_id, present):
            for message in translator.messages(name, data):
                await send(message)

    async def receive() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await socket.receive_text()  # feature_flags and the like: nothing to answer

    remaining = await comfy_face.queue_remaining(gateway)
    status = {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}
    await send({"type": "status", "data": status})
    reader = asyncio.create_task(receive())
    seen: set[str] = set()
    try:
        while not reader.done():
            getter = asyncio.ensure_future(inbox.get())
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            prompt_id = getter.result()
            if prompt_id not in seen:
                seen.add(prompt_id)
                follower = asyncio.create_task(follow(prompt_id))
                followers.add(follower)
                follower.add_done_callback(followers.discard)
    finally:
        clients_.listeners[sid].discard(inbox)
        if not clients_.listeners[sid]:
            del clients_.listeners[sid]
        for task in [reader, *followers]:
            task.cancel()
        await asyncio.gather(reader, *followers, return_exceptions=True)
