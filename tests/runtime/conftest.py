"""Fixtures for runtime tests: a loopback file server that counts requests, honours Range,
can cut a response mid-body, and answers Hugging Face's ``resolve`` URLs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from comfyfleet.testing.objectinfo import recorded_system_stats

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    """Plain HTTP/1.1 on 127.0.0.1 (one request per connection), written by hand so a test can
    drop the connection at an exact byte."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    cut_after: dict[str, list[int]] = field(default_factory=dict)  # path -> byte counts, FIFO
    gate: asyncio.Event | None = None  # when set, GETs wait for it before sending the body
    got_get: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first GET
    ignore_range: bool = False  # answer 200 with the whole body, like some CDNs
    url: str = ""

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url + path

    def add_hf(self, repo: str, file: str, body: bytes, revision: str = "main") -> None:
        self.files[f"/{repo}/resolve/{revision}/{file}"] = body
        self.files[f"/{repo}/resolve/{COMMIT}/{file}"] = body

    def gets(self, path: str | None = None) -> list[Hit]:
        return [h for h in self.hits if h.method == "GET" and (path is None or h.path == path)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        pairs = (ln.partition(":") for ln in lines[1:] if ln)
        headers = {k.lower(): v.strip() for k, _, v in pairs}
        path = target.split("?", 1)[0]
        self.hits.append(Hit(method, path, headers))
        body = self.files.get(path)
        if body is None:
            writer.write(self._head("404 Not Found", 0, {"Connection": "close"}))
            await writer.drain()
            writer.close()
            return
        status, start = "200 OK", 0
        extra = {"Accept-Ranges": "bytes", "Connection": "close"}
        m = None if self.ignore_range else re.fullmatch(r"bytes=(\d+)-", headers.get("range", ""))
        if m:
            start = int(m.group(1))
            if start >= len(body):
                extra["Content-Range"] = f"bytes */{len(body)}"
                writer.write(self._head("416 Range Not Satisfiable", 0, extra))
                await writer.drain()
                writer.close()
                return
            status = "206 Partial Content"
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        if "/resolve/" in path:
            extra["X-Repo-Commit"] = COMMIT
            extra["ETag"] = f'"{hashlib.sha256(body).hexdigest()}"'
        chunk = body[start:]
        writer.write(self._head(status, len(chunk), extra))
        if method == "GET":
            self.got_get.set()
            if self.gate is not None:
                await writer.drain()
                await self.gate.wait()
            cuts = self.cut_after.get(path)
            if cuts:
                writer.write(chunk[: cuts.pop(0)])
                await writer.drain()
                writer.transport.abort()
                return
            writer.write(chunk)
        await writer.drain()
        writer.close()

    @staticmethod
    def _head(status: str, length: int, extra: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.fixture
async def fileserver() -> AsyncIterator[FileServer]:
    srv = FileServer()
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    srv.url = f"http://127.0.0.1:{port}"
    async with server:
        yield srv
        server.close()


@pytest.fixture
def hf_cache():
    """``hf_cache(cache_dir, repo, file, body)`` lays a file out as huggingface_hub's cache does."""
    return _hf_cache_file


def _hf_cache_file(cache: Path, repo: str, file: str, body: bytes, ref: str = "main") -> Path:
    """Lay a file out exactly as huggingface_hub's cache does (blob + snapshot symlink)."""
    base = cache / "hub" / f"models--{repo.replace('/', '--')}"
    blob = base / "blobs" / hashlib.sha256(body).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(body)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / ref).write_text(COMMIT)
    snap = base / "snapshots" / COMMIT / file
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(blob)
    return snap


# ComfyUI 0.8.0's recordings, in the repository (see the README there).
PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui-protocol"


@dataclass
class FakeComfy:
    """Just enough ComfyUI for health and warm-up: /system_stats, POST /prompt, /history.

    Bodies come from the recorded protocol. ``unready`` answers /system_stats 503 that many
    times first; ``outcome`` is "success", "error" or "reject"."""

    url: str = ""
    unready: int = 0
    outcome: str = "success"
    history_polls_before_done: int = 1
    prompts: list[dict] = field(default_factory=list)

    def app(self):
        from aiohttp import web

        stats = recorded_system_stats()  # the recording, shipped as the test server's data
        done: dict[str, int] = {}

        async def system_stats(request: web.Request) -> web.Response:
            if self.unready > 0:
                self.unready -= 1
                return web.Response(status=503)
            return web.json_response(stats)

        async def prompt(request: web.Request) -> web.Response:
            body = await request.json()
            self.prompts.append(body)
            if self.outcome == "reject":
                return web.json_response(_recorded_rejection(), status=400)
            done[body["prompt_id"]] = 0
            return web.json_response(
                {"prompt_id": body["prompt_id"], "number": 1, "node_errors": {}}
            )

        async def history(request: web.Request) -> web.Response:
            pid = request.match_info["pid"]
            if pid not in done or done[pid] < self.history_polls_before_done:
                done[pid] = done.get(pid, 0) + 1
                return web.json_response({})  # ComfyUI's answer until the entry is written
            ok = self.outcome == "success"
            messages = (
                []
                if ok
                else [
                    [
                        "execution_error",
                        {
                            "node_id": "2",
                            "node_type": "ImageToMask",
                            "exception_message": "index 3 is out of bounds\n",
                        },
                    ]
                ]
            )
            status = {
                "status_str": "success" if ok else "error",
                "completed": ok,
                "messages": messages,
            }
            return web.json_response({pid: {"outputs": {}, "status": status}})

        app = web.Application()
        app.router.add_get("/system_stats", system_stats)
        app.router.add_post("/prompt", prompt)
        app.router.add_get("/history/{pid}", history)
        return app


def _recorded_rejection() -> dict:
    cases = json.loads((PROTOCOL_DIR / "c_validation_errors.json").read_text())["cases"]
    return cases[0]["exchanges"][0]["response"]["json"]


@pytest.fixture
async def fake_comfy() -> AsyncIterator[FakeComfy]:
    from aiohttp.test_utils import TestServer

    fake = FakeComfy()
    server = TestServer(fake.app(), host="127.0.0.1", port=0)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()
