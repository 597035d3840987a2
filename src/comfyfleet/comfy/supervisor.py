"""ComfyUI's process: launch it, know when it is ready, restart it when it dies.

One monitor thread owns the process for the worker's life: it launches ``python main.py <args>``
from COMFYUI_DIR, polls ``/system_stats`` until it answers (no fixed sleep: readiness is usually
seconds and a sleep is either too long or too short), then waits on the process. When it exits
unasked, every job guarded by `Supervisor.guard` is cancelled and fails with `ComfyCrashed`
naming the exit code, and the process is launched again. Start-up failures back off and, after
a few in a row, the supervisor gives up so jobs fail fast instead of waiting out a timeout.

`comfyfleet worker` imports this module before anything else to launch ComfyUI, so what is only
needed after the launch (asyncio, urllib) is imported where it is used.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit

import psutil

from comfyfleet.errors import ComfyCrashed, ComfyError, ComfyUnavailable
from comfyfleet.processes import DIE_WITH_PARENT, signal_group, terminate_group

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)
comfy_log = logging.getLogger("comfyfleet.comfyui")

T = TypeVar("T")
State = Literal["idle", "starting", "ready", "stopped", "failed"]

MAX_START_FAILURES = 3


@dataclass(frozen=True)
class Exit:
    """How one ComfyUI process ended."""

    generation: int
    pid: int
    code: int | None
    tail: tuple[str, ...]

    def describe(self) -> str:
        code = self.code
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"


def launch_args(args: str, url: str) -> list[str]:
    """``args`` split, plus ``--listen``/``--port`` taken from ``url`` when not given."""
    argv = shlex.split(args)
    parts = urlsplit(url)
    if "--port" not in argv and parts.port:
        argv += ["--port", str(parts.port)]
    if "--listen" not in argv and parts.hostname:
        argv += ["--listen", parts.hostname]
    return argv


class Supervisor:
    """Owns one ComfyUI process at a time (see module docstring)."""

    def __init__(
        self,
        comfy_dir: Path,
        url: str,
        *,
        args: str = "",
        python: str | None = None,
        ready_timeout: float = 600.0,
        restart: bool = True,
        backoff: float = 0.5,
        env: dict[str, str] | None = None,
    ) -> None:
        self.comfy_dir = Path(comfy_dir)
        self.url = url.rstrip("/")
        self.argv = [python or sys.executable, "main.py", *launch_args(args, self.url)]
        self.ready_timeout = ready_timeout
        self.restart = restart
        self.backoff = backoff
        self.env = env
        self.state: State = "idle"
        self.generation = 0
        self.restarts = 0
        self.last_exit: Exit | None = None
        self.last_ready_seconds: float | None = None
        self.failure: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._cond = threading.Condition()
        self._listeners: set[Callable[[Exit], None]] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._launched_at = 0.0

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Launch ComfyUI now and supervise it from a background thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("supervisor already started")
        self._launch()  # from the main thread: the parent-death signal follows this thread
        self._thread = threading.Thread(target=self._run, name="comfy-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0, *, reason: str = "ComfyUI was stopped") -> None:
        """Terminate ComfyUI (its whole process group) and stop restarting it."""
        self._stopping.set()
        self.failure = self.failure or reason
        proc = self._proc
        if proc is not None and proc.poll() is None:
            log.info("stopping ComfyUI", extra={"pid": proc.pid})
            terminate_group(proc, timeout)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._set_state("stopped")

    def _launch(self) -> None:
        self.generation += 1
        self._tail.clear()
        self._set_state("starting")
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.comfy_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=DIE_WITH_PARENT,
        )
        self._launched_at = time.perf_counter()
        log.info(
            "ComfyUI launched",
            extra={
                "pid": self._proc.pid,
                "generation": self.generation,
                "argv": self.argv,
                "worker_age": round(time.time() - psutil.Process().create_time(), 3),
            },
        )
        threading.Thread(
            target=self._pump, args=(self._proc,), name="comfy-output", daemon=True
        ).start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Forward ComfyUI's output to our log and keep its tail for crash reports."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            comfy_log.info(line, extra={"pid": proc.pid})

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            ready = self._await_ready(proc)
            if ready:
                failures = 0
            code = proc.wait()
            exit_ = Exit(self.generation, proc.pid, code, tuple(self._tail))
            self.last_exit = exit_
            if self._stopping.is_set():
                break
            log.error(
                "ComfyUI %s", exit_.describe(), extra={"pid": proc.pid, "tail": list(exit_.tail)}
            )
            self._notify(exit_)
            if not ready:
                failures += 1
                if failures >= MAX_START_FAILURES:
                    self.failure = (
                        f"ComfyUI failed to start {failures} times; it last {exit_.describe()}"
                    )
                    self._set_state("failed")
                    return
            if not self.restart:
                self.failure = f"ComfyUI {exit_.describe()}"
                self._set_state("failed")
                return
            if failures and self._stopping.wait(min(30.0, self.backoff * 2 ** (failures - 1))):
                break
            self.restarts += 1
            self._launch()

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """Poll /system_stats until it answers 200; False if the process exits first."""
        deadline = time.monotonic() + self.ready_timeout
        interval = 0.005
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                return False
            if self.probe(timeout=1.0):
                self.last_ready_seconds = time.perf_counter() - self._launched_at
                log.info(
                    "ComfyUI ready",
                    extra={"pid": proc.pid, "seconds": round(self.last_ready_seconds, 3)},
                )
                self._set_state("ready")
                return True
            self._stopping.wait(interval)
            interval = min(interval * 1.5, 0.05)  # a refused connect costs nothing
        if proc.poll() is None and not self._stopping.is_set():
            log.error("ComfyUI not ready after %.0f s; killing it", self.ready_timeout)
            signal_group(proc, signal.SIGKILL)
        return False

    def probe(self, timeout: float = 1.0) -> bool:
        """True if ComfyUI answers ``GET /system_stats`` with 200 right now."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/system_stats", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _set_state(self, state: State) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _notify(self, exit_: Exit) -> None:
        for listener in list(self._listeners):
            try:
                listener(exit_)
            except Exception:
                log.exception("crash listener failed")

    # --- for jobs ---------------------------------------------------------------------------
    def wait_ready_blocking(self, timeout: float | None = None) -> None:
        """Block until ComfyUI is ready; raise `ComfyUnavailable` if it failed or time ran out."""
        limit = self.ready_timeout if timeout is None else timeout
        with self._cond:
            done = self._cond.wait_for(
                lambda: self.state in ("ready", "failed", "stopped"), timeout=limit
            )
            state = self.state
        if state == "ready":
            return
        if not done:
            raise ComfyUnavailable(
                f"ComfyUI did not become ready within {limit:.0f} s", tail=list(self._tail)
            )
        reason = self.failure or "ComfyUI is not running"
        raise ComfyUnavailable(
            reason, state=state, tail=list(self.last_exit.tail if self.last_exit else ())
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        import asyncio

        if self.state == "ready":
            return
        await asyncio.to_thread(self.wait_ready_blocking, timeout)

    def exited(self, generation: int) -> bool:
        """True if the process of ``generation`` is gone (or a zombie not yet reaped)."""
        if generation != self.generation or self._proc is None:
            return True
        if self._proc.returncode is not None:
            return True
        try:
            return psutil.Process(self._proc.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    async def guard(self, work: Awaitable[T], *, job_id: str | None = None) -> T:
        """Run ``work``; if ComfyUI dies meanwhile, cancel it and raise `ComfyCrashed`."""
        import asyncio

        loop = asyncio.get_running_loop()
        died: asyncio.Future[Exit] = loop.create_future()
        generation = self.generation

        def on_exit(exit_: Exit) -> None:
            if exit_.generation == generation:
                loop.call_soon_threadsafe(lambda: died.done() or died.set_result(exit_))

        self._listeners.add(on_exit)
        task = asyncio.ensure_future(work)
        try:
            if self.exited(generation):
                raise self._crashed(self.last_exit, generation, job_id)
            done, _ = await asyncio.wait({task, died}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                try:
                    return task.result()
                except ComfyError as exc:
                    if not self.exited(generation):
                        raise
                    # The process is gone; its exit code is a moment away (the monitor reaps it).
                    exit_ = None
                    with contextlib.suppress(TimeoutError):
                        exit_ = await asyncio.wait_for(asyncio.shield(died), 5.0)
                    raise self._crashed(exit_ or self.last_exit, generation, job_id) from exc
            raise self._crashed(died.result(), generation, job_id)
        finally:
            self._listeners.discard(on_exit)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _crashed(self, exit_: Exit | None, generation: int, job_id: str | None) -> ComfyCrashed:
        how = exit_.describe() if exit_ and exit_.generation == generation else "exited"
        return ComfyCrashed(
            f"ComfyUI {how} while the job was running; the worker is restarting it — "
            "submit the job again",
            job_id=job_id,
            exit_code=exit_.code if exit_ else None,
            comfy_tail=list(exit_.tail[-10:]) if exit_ else None,
        )
