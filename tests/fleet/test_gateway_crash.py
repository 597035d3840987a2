"""``kill -9`` of a whole gateway (``comfyfleet serve`` in a child process) with tasks queued,
running and prefetched into ComfyUI's queue: after a restart every task completes, exactly
once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers import executions, final, free_port, until, workflow


class GatewayProcess:
    def __init__(self, tmp_path: Path, backends: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp_path = tmp_path
        self.backends = backends
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.tmp_path / f"gateway-{self.starts}.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            "comfyfleet.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.tmp_path / "data"),
        ]
        for backend in self.backends:
            cmd += ["--comfy", backend]
        env = {
            **os.environ,
            "COMFYFLEET_LEASE_SECONDS": "1.5",
            "COMFYFLEET_API_KEYS": "[]",
            "COMFYFLEET_RETRY_BACKOFF": "0.1",
            "COMFYFLEET_PREFETCH_DEPTH": "1",
        }
        env.pop("COMFYFLEET_DATABASE_URL", None)
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a child process: wait for it to listen
            if self.proc.poll() is not None:
                raise RuntimeError(self.log())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(self.log())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return "".join(p.read_text()[-3000:] for p in sorted(self.tmp_path.glob("gateway-*.log")))


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Any]:
    made: list[GatewayProcess] = []

    def make(backends: list[str]) -> GatewayProcess:
        made.append(GatewayProcess(tmp_path, backends))
        made[-1].start()
        return made[-1]

    yield make
    for gw in made:
        gw.stop()


async def test_killed_gateway_loses_no_task(gateway_process, start_servers) -> None:
    a, b = await start_servers(2, job_seconds=1.0)
    gw = gateway_process([f"a={a.url}", f"b={b.url}"])
    prefixes: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        for i in range(8):
            prefix = f"t{i}{os.urandom(5).hex()}"
            body = {"workflow": workflow(prefix), "debug": True}  # files kept: `executions`
            resp = await client.post("/api/v1/tasks", json=body)
            resp.raise_for_status()
            prefixes[resp.json()["id"]] = prefix
        in_flight = list(prefixes)[:4]
        for task_id in in_flight:  # FIFO: running on a and b, and one more waiting in each
            await until(client, task_id, "started")
    gw.kill9()
    gw.start()  # same database and data dir, new process
    async with httpx.AsyncClient(base_url=gw.url, timeout=90) as client:
        done = {task_id: await final(client, task_id) for task_id in prefixes}
    assert {t["status"] for t in done.values()} == {"succeeded"}, gw.log()
    outputs = [a.output_dir, b.output_dir]
    for task_id, prefix in prefixes.items():
        ran = executions(outputs, prefix)
        if task_id in in_flight:
            # Claimed at the crash: its prompt may have finished on ComfyUI, unreported (a
            # prefetched one runs there after the gateway died); the task ran again after its
            # lease expired and completed once.
            assert done[task_id]["attempts"] == 2 and 1 <= ran <= 2
        else:
            assert done[task_id]["attempts"] == 1 and ran == 1
        assert len(done[task_id]["result"]["artifacts"]) == 1
