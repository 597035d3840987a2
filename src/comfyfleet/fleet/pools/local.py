"""``local``: ComfyUI processes on this machine, launched by the runtime's `Supervisor`.

One process per GPU (``gpus=N``: worker slot k sees ``CUDA_VISIBLE_DEVICES=k``) or as many as
``max`` on CPU. Each gets a free port and its own ``input/`` and ``output/`` folders under
``<data_dir>/workers/<pool>/<worker>/``, so workers never see each other's files. The command
is ``command=`` (placeholders ``{python} {port} {root} {input_dir} {output_dir} {gpu}``; tests
use ``{python} -m comfyfleet.testing --port {port} --root {root}``), else ComfyUI's ``main.py``
from ``COMFYUI_DIR``. The folders go with the worker unless ``keep_folders=true``.

A small state file per worker (pid, start time, URL) lets another provider instance — a
restarted pool, a replica taking over on the same machine — list and adopt live workers.
Processes die with the gateway (parent-death signal), so nothing outlives a crashed gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from comfyfleet.comfy.supervisor import Supervisor
from comfyfleet.fleet.pools.provider import Health, Provider, WorkerHandle, WorkerStartError
from comfyfleet.fleet.pools.spec import WorkerSpec

COMFY_MAIN = (
    "{python} main.py --listen 127.0.0.1 --port {port} --input-directory {input_dir} "
    "--output-directory {output_dir} --disable-auto-launch"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Process(Supervisor):
    """The runtime's supervisor for one worker: any argv, no restarts (the pool replaces)."""

    def __init__(self, argv: list[str], cwd: Path, url: str, env: dict[str, str]) -> None:
        super().__init__(cwd, url, restart=False, env=env)
        self.argv = argv
        self.pumped = threading.Event()  # set once all of the process's output is read

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            super()._pump(proc)
        finally:
            self.pumped.set()


class LocalProvider(Provider):
    kind = "local"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._procs: dict[str, _Process] = {}

    def validate(self) -> None:
        gpus = self.option("gpus")
        if gpus is not None:
            if not gpus.isdigit():
                raise self.bad(f"gpus={gpus!r} must be a number of GPUs")
            if int(gpus) and self.pool.max > int(gpus):
                raise self.bad(f"max={self.pool.max} but gpus={gpus}: one worker per GPU")
        if self.option("command") is None and self.settings.comfy_dir is None:
            raise self.bad("needs command=... or COMFYUI_DIR (a ComfyUI checkout with main.py)")

    def _argv(self, spec: WorkerSpec, port: int, root: Path) -> list[str]:
        template = self.option("command") or COMFY_MAIN
        values = {
            "python": self.option("python") or self.settings.comfy_python or sys.executable,
            "port": str(port),
            "root": str(root),
            "input_dir": str(root / "input"),
            "output_dir": str(root / "output"),
            "gpu": str(self._gpu(spec) or ""),
        }
        try:
            argv = [part.format(**values) for part in shlex.split(template)]
        except (KeyError, ValueError, IndexError) as exc:
            raise self.bad(f"command has an unknown placeholder: {exc}") from None
        if self.option("command") is None and self._gpu(spec) is None:
            argv.append("--cpu")
        return argv

    def _gpu(self, spec: WorkerSpec) -> int | None:
        gpus = int(self.option("gpus") or 0)
        return spec.slot % gpus if gpus else None

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        root = self.data_dir / spec.worker_id
        for sub in ("input", "output"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **spec.env}
        gpu = self._gpu(spec)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        cwd = Path(self.option("workdir") or self.settings.comfy_dir or root)
        proc = _Process(self._argv(spec, port, root), cwd, url, env)
        try:
            proc.start()  # on the loop's thread: the child's parent-death signal follows it
        except OSError as exc:
            raise WorkerStartError(f"cannot launch {proc.argv[0]}: {exc}") from exc
        self._procs[spec.worker_id] = proc
        handle = WorkerHandle(
            spec.worker_id, spec.pool, url, str(proc.pid), labels=self.labels(spec)
        )
        created = psutil.Process(proc.pid).create_time()
        state = {"pid": proc.pid, "create_time": created, "url": url, "labels": handle.labels}
        (root / "worker.json").write_text(json.dumps(state))
        return handle

    async def stop(self, handle: WorkerHandle) -> None:
        proc = self._procs.pop(handle.id, None)
        if proc is not None:
            await asyncio.to_thread(proc.stop, 10.0, reason="stopped by its pool")
        else:
            await asyncio.to_thread(_kill_group, int(handle.ref))
        if self.option("keep_folders") == "true":  # benchmarks, debugging: outputs stay
            (self.data_dir / handle.id / "worker.json").unlink(missing_ok=True)
        else:
            shutil.rmtree(self.data_dir / handle.id, ignore_errors=True)

    async def list_owned(self) -> list[WorkerHandle]:
        owned = []
        for state_file in sorted(self.data_dir.glob("*/worker.json")):
            with contextlib.suppress(OSError, ValueError, KeyError):
                state = json.loads(state_file.read_text())
                worker_id = state_file.parent.name
                if not _alive(state["pid"], state["create_time"]):
                    shutil.rmtree(state_file.parent, ignore_errors=True)
                    continue
                owned.append(
                    WorkerHandle(
                        worker_id,
                        self.pool.name,
                        state["url"],
                        str(state["pid"]),
                        created_at=state["create_time"],
                        labels=state.get("labels", {}),
                    )
                )
        return owned

    async def health(self, handle: WorkerHandle) -> Health:
        proc = self._procs.get(handle.id)
        if proc is None:
            pid = int(handle.ref)
            alive = _alive(pid, None)
            return Health(alive, None if alive else f"process {pid} is gone")
        if proc.state in ("failed", "stopped") or proc.exited(proc.generation):
            # The supervisor's thread records the exit code a moment after the process ends.
            await asyncio.to_thread(_settled, proc, 5.0)
            code = proc.last_exit.code if proc.last_exit else None
            return Health(False, proc.failure or f"exited with code {code}", code)
        return Health(True)

    async def logs(self, handle: WorkerHandle, tail: int = 100) -> str:
        proc = self._procs.get(handle.id)
        if proc is None:
            return ""
        if proc.exited(proc.generation):
            await asyncio.to_thread(proc.pumped.wait, 5.0)
        lines = list(proc._tail)
        return "\n".join(lines[-tail:])


def _settled(proc: Supervisor, timeout: float) -> None:
    with proc._cond:
        proc._cond.wait_for(lambda: proc.state in ("failed", "stopped"), timeout)


def _alive(pid: int, create_time: float | None) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(process.create_time() - create_time) < 0.01
    except psutil.Error:
        return False


def _kill_group(pid: int, timeout: float = 10.0) -> None:
    """Stop an adopted worker (its own process group) we hold no Popen for."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(max(deadline - time.monotonic(), 0.1))
            return
