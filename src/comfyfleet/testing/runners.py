"""Running the test server for synchronous tests: in a background thread, or as a child process
(``python -m comfyfleet.testing``) that a test can kill like a real ComfyUI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from comfyfleet.testing.server import ComfyTestServer

T = TypeVar("T")
READY_RE = re.compile(r"listening on (http://\S+)")


class ThreadedComfyTestServer:
    """A :class:`ComfyTestServer` on its own event loop in a daemon thread.

    ``with ComfyTestServer(root=tmp_path).run_in_thread() as srv:`` -- attributes such as
    ``url``, ``ws_url``, ``faults`` and ``input_dir`` are the server's; ``die()``, ``restart()``
    and ``stop()`` are synchronous."""

    def __init__(self, server: ComfyTestServer) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    def start(self, timeout: float = 30.0) -> ThreadedComfyTestServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as e:  # report to the starting thread
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.server.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="comfy-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the test server did not start")
        if errors:
            raise errors[0]
        return self

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``await fn()`` on the server's loop and return its result."""
        assert self._loop is not None

        async def runner() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    def die(self) -> None:
        self.call(self.server.die)

    def restart(self) -> None:
        self.call(self.server.restart)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._loop = None

    def __enter__(self) -> ThreadedComfyTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ComfyTestProcess:
    """``python -m comfyfleet.testing`` in a child process.

    ``with ComfyTestServer.start_subprocess(root=tmp_path) as proc:`` -- ``proc.url``,
    ``proc.ws_url``, ``proc.process`` (the Popen), ``proc.set_faults(...)`` (through
    ``/_testing/faults``), ``proc.die()`` (the process exits with code 86), ``proc.kill()``.
    The child's log goes to ``<root>/server.log``."""

    def __init__(self, process: subprocess.Popen[str], url: str, root: Path, log_path: Path):
        self.process = process
        self.url = url
        self.ws_url = url.replace("http://", "ws://", 1) + "/ws"
        self.root = root
        self.log_path = log_path
        self.port = int(url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def temp_dir(self) -> Path:
        return self.root / "temp"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @classmethod
    def start(
        cls,
        root: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache: str | None = None,
        png_compress_level: int | None = None,
        preview_method: str | None = None,
        faults: dict[str, Any] | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> ComfyTestProcess:
        root_path = (
            Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="comfyfleet-testing-"))
        )
        root_path.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "comfyfleet.testing", "--host", host, "--port", str(port)]
        cmd += ["--root", str(root_path)]
        if cache is not None:
            cmd += ["--cache", cache]
        if png_compress_level is not None:
            cmd += ["--png-compress-level", str(png_compress_level)]
        if preview_method is not None:
            cmd += ["--preview-method", preview_method]
        if faults:
            cmd += ["--faults", json.dumps(faults)]
        cmd += extra_args or []
        log_path = root_path / "server.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, **(env or {})},
            )
        finally:
            log_file.close()
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(process.stdout.readline() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        match = READY_RE.search(line[0]) if line else None
        if match is None:
            process.kill()
            process.wait()
            log = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"test server did not start: {line[:1]!r}\n{log}")
        return cls(process, match.group(1), root_path, log_path)

    # -- control ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        return self._request("POST", "/_testing/faults", knobs)

    def get_faults(self) -> dict[str, Any]:
        return self._request("GET", "/_testing/faults")

    def reset_faults(self) -> dict[str, Any]:
        return self._request("DELETE", "/_testing/faults")

    def die(self, timeout: float = 10.0) -> int:
        """Ask the server to crash (exit code 86) and wait for the process to end."""
        with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError):
            self._request("POST", "/_testing/die")
        return self.process.wait(timeout)

    def kill(self) -> int:
        self.process.kill()
        return self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait_until_answering(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._request("GET", "/system_stats", timeout=1.0)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> ComfyTestProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
