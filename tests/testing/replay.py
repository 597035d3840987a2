"""Helpers to replay the ComfyUI 0.8.0 recordings (tests/fixtures/comfyui-protocol) against the
test server and compare what comes back, with volatile values (timestamps, prompt ids,
tracebacks, tensor reprs, install paths, queue numbers) normalized away and everything else
kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp

# In the repository; its README says where the recordings come from.
PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui-protocol"


def load(name: str) -> dict[str, Any]:
    with open(PROTOCOL_DIR / name, encoding="utf-8") as f:
        return json.load(f)


# -- normalization ---------------------------------------------------------------------------


class Normalizer:
    """Maps prompt ids to P1, P2, ... (in registration order), queue numbers to offsets from the
    scenario's first number, and install paths to /opt/ComfyUI."""

    def __init__(self, root: str | None = None) -> None:
        self.ids: dict[str, str] = {}
        self.base: int | None = None
        self.root = root

    def register(self, prompt_id: str, number: Any = None) -> None:
        if prompt_id not in self.ids:
            self.ids[prompt_id] = f"P{len(self.ids) + 1}"
        if isinstance(number, int) and not isinstance(number, bool) and self.base is None:
            self.base = abs(number)

    def number(self, n: Any) -> Any:
        if isinstance(n, bool) or not isinstance(n, int) or self.base is None:
            return self.norm(n)
        if n < 0:
            return f"-#{abs(n) - self.base}"
        return f"#{n - self.base}"

    def _path(self, s: str) -> str:
        if self.root:
            s = s.replace(self.root, "/opt/ComfyUI")
        return s

    def _tuple(self, item: list[Any]) -> list[Any]:
        # (number, prompt_id, prompt, extra_data, outputs) of /queue and history
        return [self.number(item[0]), *(self.norm(x) for x in item[1:])]

    def norm(self, obj: Any, key: str | None = None) -> Any:
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                nk = self.ids.get(k, k) if isinstance(k, str) else k
                if k in ("timestamp", "create_time", "execution_start_time", "execution_end_time"):
                    out[nk] = "<ts>"
                elif k == "traceback":
                    out[nk] = "<traceback>"
                elif k in ("number", "priority"):
                    out[nk] = self.number(v)
                elif k in ("current_outputs", "executed") and isinstance(v, list):
                    out[nk] = sorted(self.norm(x) for x in v)
                elif k == "current_inputs" and isinstance(v, dict):
                    out[nk] = {
                        name: [
                            "<tensor>"
                            if isinstance(x, str) and (x.startswith("tensor(") or x.startswith("["))
                            else self.norm(x)
                            for x in values
                        ]
                        for name, values in v.items()
                    }
                elif k == "exception_message" and isinstance(v, str):
                    out[nk] = self._path(v)
                elif k == "sid" and isinstance(v, str) and len(v) == 32:
                    out[nk] = "<sid32>"
                elif k == "prompt" and isinstance(v, list) and len(v) == 5:
                    out[nk] = self._tuple(v)
                elif k in ("queue_running", "queue_pending") and isinstance(v, list):
                    out[nk] = [self._tuple(x) for x in v]
                else:
                    out[nk] = self.norm(v, k)
            return out
        if isinstance(obj, list):
            return [self.norm(x) for x in obj]
        if isinstance(obj, float):
            return f"float:{obj!r}"
        if isinstance(obj, str):
            return self.ids.get(obj, obj)
        return obj


def recorded_message(entry: dict[str, Any]) -> dict[str, Any]:
    """A recorded ws entry as {"type", "data"} (binary frames: event type + metadata)."""
    if entry["kind"] == "text":
        return entry["msg"]
    out: dict[str, Any] = {"type": f"binary:{entry['event_type']}"}
    if "metadata" in entry:
        out["data"] = entry["metadata"]
    if "image_format" in entry:
        out["data"] = {"image_format": entry["image_format"]}
    return out


def binary_message(data: bytes) -> dict[str, Any]:
    event = struct.unpack(">I", data[:4])[0]
    out: dict[str, Any] = {"type": f"binary:{event}"}
    if event == 4:
        n = struct.unpack(">I", data[4:8])[0]
        out["data"] = json.loads(data[8 : 8 + n])
    elif event == 1:
        out["data"] = {"image_format": struct.unpack(">I", data[4:8])[0]}
    return out


# -- a websocket client that records everything ----------------------------------------------


class WsRecorder:
    def __init__(self, session: aiohttp.ClientSession, ws_url: str) -> None:
        self.session = session
        self.ws_url = ws_url
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed = asyncio.Event()

    async def connect(self, client_id: str | None = None, feature_flags: dict | None = None):
        url = self.ws_url + (f"?clientId={client_id}" if client_id else "")
        self.ws = await self.session.ws_connect(url)
        if feature_flags is not None:
            await self.ws.send_json({"type": "feature_flags", "data": feature_flags})
        self._task = asyncio.create_task(self._read())
        await self.wait_for(lambda m: m["type"] == "status" and "sid" in m["data"])
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(json.loads(msg.data))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.messages.append(binary_message(msg.data))
                self._changed.set()
        finally:
            self.closed.set()
            self._changed.set()

    def mark(self) -> int:
        return len(self.messages)

    async def wait_for(self, predicate, start: int = 0, timeout: float = 20.0) -> int:
        """Index of the first message at or after `start` matching `predicate`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i in range(start, len(self.messages)):
                if predicate(self.messages[i]):
                    return i
            if self.closed.is_set():
                raise ConnectionError("websocket closed while waiting")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    "no matching message; got: " + json.dumps(self.messages[start:])[:3000]
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_done(self, prompt_id: str, start: int = 0, timeout: float = 20.0) -> int:
        return await self.wait_for(
            lambda m: (
                m["type"] == "executing"
                and m["data"].get("node") is None
                and m["data"].get("prompt_id") == prompt_id
            ),
            start,
            timeout,
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)


def split_status(messages: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(status messages, all other messages) -- for runs where HTTP requests interleave."""
    status = [m for m in messages if m["type"] == "status"]
    other = [m for m in messages if m["type"] != "status"]
    return status, other


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]
