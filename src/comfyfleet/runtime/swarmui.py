"""SwarmUI's process, for the worker's pass-through face: launch, readiness, restart, logs.

SwarmUI is installed onto the volume by `comfyfleet.runtime.provision` (git checkout at a
pinned ref plus its official ``dotnet build``) and launched with its own ``launch-linux.sh``.
One monitor thread owns it: it polls ``POST /API/GetNewSession`` — the call the worker's
``ready`` action makes — with a backoff from 50 ms to 1 s until it answers (no fixed sleep),
waits on the process, and launches it again when it exits unasked. Its output goes to a log
file on the volume that is kept across restarts (each launch starts with a ``--- launch N``
line), and its last lines are kept in memory for error messages. After three start-ups in a
row that never became ready, it gives up and `wait_ready` fails at once with that output.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Literal

from comfyfleet.errors import ServiceUnavailable
from comfyfleet.processes import DIE_WITH_PARENT, signal_group, terminate_group

log = logging.getLogger(__name__)

State = Literal["idle", "starting", "ready", "stopped", "failed"]
MAX_START_FAILURES = 3


class SwarmProcess:
    """Owns one SwarmUI process at a time (see module docstring)."""

    def __init__(
        self,
        swarm_dir: Path,
        launch: str,
        *,
        host: str = "127.0.0.1",
        port: int = 7801,
        log_file: Path,
        ready_timeout: float = 600.0,
        backoff: float = 0.5,
    ) -> None:
        self.swarm_dir = Path(swarm_dir)
        self.url = f"http://{host}:{port}"
        self.argv = shlex.split(launch.format(host=host, port=port))
        self.log_file = log_file
        self.ready_timeout = ready_timeout
        self.backoff = backoff
        self.state: State = "idle"
        self.restarts = 0
        self.launches = 0
        self.failure: str | None = None
        self.version: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def describe(self) -> dict[str, object]:
        return {
            "url": self.url,
            "managed": True,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "log": str(self.log_file),
        }

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SwarmUI is already started")
        self._launch()
        self._thread = threading.Thread(target=self._run, name="swarm-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is not None:
            terminate_group(proc, timeout)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._set_state("stopped")

    def _launch(self) -> None:
        self.launches += 1
        self._tail.clear()
        self._set_state("starting")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            out.write(f"--- launch {self.launches} at {stamp}: {shlex.join(self.argv)}\n".encode())
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.swarm_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=DIE_WITH_PARENT,
        )
        log.info("SwarmUI launched", extra={"pid": self._proc.pid, "argv": self.argv})
        threading.Thread(target=self._pump, args=(self._proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with self.log_file.open("ab") as out:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                self._tail.append(raw.decode(errors="replace").rstrip())

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            ready = self._await_ready(proc)
            failures = 0 if ready else failures + 1
            code = proc.wait()
            if self._stopping.is_set():
                break
            log.error("SwarmUI exited with code %s", code, extra={"tail": list(self._tail)[-10:]})
            if failures >= MAX_START_FAILURES:
                last = self._tail[-1] if self._tail else f"exit code {code}"
                self.failure = f"SwarmUI failed to start {failures} times; last: {last}"
                self._set_state("failed")
                return
            if failures and self._stopping.wait(min(30.0, self.backoff * 2 ** (failures - 1))):
                break
            self.restarts += 1
            self._launch()

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        interval = 0.05
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                return False
            if self.probe():
                self._set_state("ready")
                log.info("SwarmUI ready", extra={"pid": proc.pid, "version": self.version})
                return True
            self._stopping.wait(interval)
            interval = min(interval * 2, 1.0)
        if proc.poll() is None and not self._stopping.is_set():
            log.error("SwarmUI not ready after %.0f s; killing it", self.ready_timeout)
            signal_group(proc, signal.SIGKILL)
        return False

    def probe(self, timeout: float = 2.0) -> bool:
        """True if SwarmUI opens a session now (``POST /API/GetNewSession``)."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            f"{self.url}/API/GetNewSession",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = json.loads(resp.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        if not isinstance(body, dict) or "session_id" not in body:
            return False
        self.version = body.get("version")
        return True

    def _set_state(self, state: State) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def wait_ready_blocking(self, timeout: float | None = None) -> None:
        limit = self.ready_timeout if timeout is None else timeout
        with self._cond:
            done = self._cond.wait_for(
                lambda: self.state in ("ready", "failed", "stopped"), timeout=limit
            )
            state = self.state
        if state == "ready":
            return
        tail = list(self._tail)[-10:]
        if not done:
            raise ServiceUnavailable(
                f"SwarmUI did not become ready within {limit:.0f} s",
                tail=tail,
                log=str(self.log_file),
            )
        raise ServiceUnavailable(
            self.failure or "SwarmUI is not running", state=state, tail=tail, log=str(self.log_file)
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        import asyncio

        if self.state == "ready":
            return
        await asyncio.to_thread(self.wait_ready_blocking, timeout)
