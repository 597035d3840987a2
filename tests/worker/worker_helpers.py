"""Helpers for the worker's tests: free ports, bounded waits, and the real processes and small
servers they talk to (the worker itself, a SwarmUI stand-in, a progress receiver, a recording
proxy in front of ComfyUI, a fake COMFYUI_DIR)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers at all; fail early if ``proc`` exits."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


S3_ENV = {"BUCKET_ACCESS_KEY_ID": "testing", "BUCKET_SECRET_ACCESS_KEY": "testing"}


# --- small in-process HTTP servers (run in a thread; the worker reaches them over HTTP) -------
class ThreadedApp:
    """An aiohttp app served from a background thread on a free port."""

    def __init__(self, app) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class SwarmStandIn:
    """A tiny SwarmUI: sessions, one generate route that echoes, a slow route and a failing one."""

    def __init__(self) -> None:
        import asyncio

        from aiohttp import web

        self.calls: list[tuple[str, str, object]] = []
        self.sessions = 0

        async def record(request: web.Request) -> object:
            body = await request.json() if request.can_read_body else None
            self.calls.append((request.method, request.path, body))
            return body

        async def root(request: web.Request) -> web.Response:
            return web.Response(text="SwarmUI")

        async def new_session(request: web.Request) -> web.Response:
            await record(request)
            self.sessions += 1
            return web.json_response(
                {"session_id": f"sess-{self.sessions}", "version": "0.9.7-standin"}
            )

        async def generate(request: web.Request) -> web.Response:
            body = await record(request)
            return web.json_response({"images": ["View/local/raw/x.png"], "echo": body})

        async def list_models(request: web.Request) -> web.Response:
            await record(request)
            return web.json_response({"files": [{"name": "sdxl.safetensors"}]})

        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(2)
            return web.json_response({})

        async def broken(request: web.Request) -> web.Response:
            return web.json_response({"error": "backend exploded"}, status=500)

        app = web.Application()
        app.router.add_get("/", root)
        app.router.add_post("/API/GetNewSession", new_session)
        app.router.add_post("/API/GenerateText2Image", generate)
        app.router.add_get("/API/ListModels", list_models)
        app.router.add_post("/API/Slow", slow)
        app.router.add_post("/API/Broken", broken)
        self.server = ThreadedApp(app)
        self.url = self.server.url


class ProgressReceiver:
    """Where the runpod SDK posts ``progress_update`` (RUNPOD_WEBHOOK_POST_OUTPUT), as RunPod's
    platform would receive it."""

    def __init__(self) -> None:
        from aiohttp import web

        self.posts: list[tuple[str, dict]] = []

        async def done(request: web.Request) -> web.Response:
            self.posts.append((request.query.get("id", ""), json.loads(await request.text())))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/done", done)
        self.server = ThreadedApp(app)
        self.webhook = f"{self.server.url}/done?id=$ID"

    def for_job(self, job_id: str) -> list[dict]:
        return [body for jid, body in self.posts if jid == job_id]


class FileServer:
    """Model files over HTTP, as a CDN would serve them; counts GETs per path. While ``gate`` is
    closed, GETs wait for it to open (so a test can hold a download in flight)."""

    def __init__(self) -> None:
        import asyncio
        import threading
        from collections import Counter

        from aiohttp import web

        self.files: dict[str, bytes] = {}
        self.gets: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()

        async def serve(request: web.Request) -> web.Response:
            body = self.files.get(request.path)
            if body is None:
                return web.Response(status=404)
            if request.method == "GET":
                self.gets[request.path] += 1
                await asyncio.to_thread(self.gate.wait, 60)
            return web.Response(body=body, content_type="application/octet-stream")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve)
        self.server = ThreadedApp(app)
        self.url = self.server.url

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url + path


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    """Poll ``check()`` until it returns something truthy (returned); fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


# --- the worker under test: `comfyfleet worker --local` as a real process --------------------
class WorkerProcess:
    """``comfyfleet worker --local --port N``: talk to it through the runpod SDK's local API."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **env}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            full_env.pop(var, None)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "comfyfleet"), "worker", "--local", "--port", str(self.port)],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/docs", 60, self.proc)

    def runsync(self, job_input: object, timeout: float = 60.0) -> dict:
        return httpx.post(f"{self.url}/runsync", json={"input": job_input}, timeout=timeout).json()

    def run(self, job_input: object) -> str:
        answer = httpx.post(f"{self.url}/run", json={"input": job_input}, timeout=10).json()
        assert answer["status"] == "IN_PROGRESS"
        return answer["id"]

    def status(self, job_id: str, timeout: float = 60.0) -> dict:
        """In the SDK's local API, the first /status call runs the job and answers when done."""
        return httpx.post(f"{self.url}/status/{job_id}", timeout=timeout).json()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)
        self._log.close()


class RecordingProxy:
    """A pass-through proxy in front of ComfyUI (HTTP and websocket) that keeps every
    ``POST /prompt`` body: the one place ComfyUI's sensitive ``extra_data`` keys can be seen."""

    def __init__(self, upstream: str) -> None:
        import asyncio

        import aiohttp
        from aiohttp import web

        self.prompts: list[dict] = []
        self._session: aiohttp.ClientSession | None = None

        def session() -> aiohttp.ClientSession:
            if self._session is None:
                self._session = aiohttp.ClientSession(auto_decompress=False)
            return self._session

        async def websocket(request: web.Request) -> web.WebSocketResponse:
            down = web.WebSocketResponse()
            await down.prepare(request)
            ws_url = "ws" + upstream[4:] + request.path_qs
            async with session().ws_connect(ws_url) as up:

                async def pump(src, dst) -> None:
                    async for msg in src:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await dst.send_str(msg.data)
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            await dst.send_bytes(msg.data)
                    await dst.close()

                tasks = [asyncio.ensure_future(pump(a, b)) for a, b in ((up, down), (down, up))]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
            return down

        async def forward(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await websocket(request)
            body = await request.read()
            if request.method == "POST" and request.path in ("/prompt", "/api/prompt"):
                self.prompts.append(json.loads(body))
            headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
            async with session().request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as resp:
                data = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() == "content-type"}
                return web.Response(status=resp.status, body=data, headers=out)

        async def close_session(app: web.Application) -> None:
            if self._session is not None:
                await self._session.close()

        app = web.Application(client_max_size=2**30)
        app.router.add_route("*", "/{tail:.*}", forward)
        app.on_cleanup.append(close_session)
        self.server = ThreadedApp(app)
        self.url = self.server.url


FAKE_MAIN = Path(__file__).with_name("fake_comfyui_main.py")


def make_fake_comfy_dir(parent: Path) -> Path:
    """A COMFYUI_DIR whose main.py is the test server (its input/output folders inside it)."""
    folder = parent / "ComfyUI"
    folder.mkdir()
    shutil.copy(FAKE_MAIN, folder / "main.py")
    return folder
