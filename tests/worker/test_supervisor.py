"""The ComfyUI supervisor with a real child process: a COMFYUI_DIR whose main.py runs the
comfyfleet test server, launched, killed and relaunched."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import psutil
import pytest

from comfyfleet.comfy.supervisor import Supervisor, launch_args
from comfyfleet.errors import ComfyCrashed, ComfyUnavailable

from .worker_helpers import free_port


def wait_for(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def supervisor(fake_comfy_dir):
    sup = Supervisor(fake_comfy_dir, f"http://127.0.0.1:{free_port()}", backoff=0.01)
    yield sup
    sup.stop()


def test_launch_args_follow_the_url():
    assert launch_args("--cpu", "http://127.0.0.1:8190") == [
        "--cpu",
        "--port",
        "8190",
        "--listen",
        "127.0.0.1",
    ]
    assert launch_args("--listen 0.0.0.0 --port 9", "http://127.0.0.1:8190") == [
        "--listen",
        "0.0.0.0",
        "--port",
        "9",
    ]


def test_ready_by_polling_then_restarted_after_a_kill(supervisor):
    supervisor.start()
    supervisor.wait_ready_blocking(60)
    assert supervisor.state == "ready" and supervisor.probe()
    assert supervisor.last_ready_seconds is not None
    first = supervisor.pid
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: supervisor.generation == 2)
    supervisor.wait_ready_blocking(60)
    assert supervisor.pid != first and supervisor.restarts == 1
    assert supervisor.last_exit.code == -9
    assert supervisor.last_exit.describe() == "was killed by SIGKILL"
    assert httpx.get(f"{supervisor.url}/system_stats").status_code == 200


async def test_guard_fails_the_work_caught_by_a_crash(supervisor):
    supervisor.start()
    await supervisor.wait_ready(60)
    forever = asyncio.Event()

    async def die_soon() -> None:
        async with httpx.AsyncClient() as client:
            await client.post(f"{supervisor.url}/_testing/die")

    asyncio.get_running_loop().create_task(die_soon())
    with pytest.raises(ComfyCrashed) as caught:
        await supervisor.guard(forever.wait(), job_id="j1")
    assert caught.value.message.startswith("ComfyUI exited with code 86 while the job was running")
    assert caught.value.details["exit_code"] == 86 and caught.value.retryable
    await supervisor.wait_ready(60)
    assert await supervisor.guard(asyncio.sleep(0, result="fine")) == "fine"


def test_a_comfy_that_cannot_start_fails_fast_with_its_output(fake_comfy_dir):
    url = f"http://127.0.0.1:{free_port()}"
    sup = Supervisor(fake_comfy_dir, url, env={**os.environ, "FAKE_COMFY_EXIT": "3"}, backoff=0.01)
    sup.start()
    try:
        with pytest.raises(
            ComfyUnavailable, match="failed to start 3 times; it last exited with code 3"
        ) as caught:
            sup.wait_ready_blocking(60)
        assert sup.state == "failed"
        assert "fake ComfyUI: cannot start (CUDA error: no device)" in caught.value.details["tail"]
    finally:
        sup.stop()


def test_stop_ends_the_process_and_its_group(supervisor):
    supervisor.start()
    supervisor.wait_ready_blocking(60)
    pid = supervisor.pid
    supervisor.stop()
    assert supervisor.state == "stopped" and not psutil.pid_exists(pid)
    with pytest.raises(ComfyUnavailable, match="stopped"):
        supervisor.wait_ready_blocking(1)
