"""A ComfyUI killed with SIGKILL is noticed at once (its websocket closes and its port refuses
connections), not after a lease or a reconnect timeout; it is used again as soon as it answers.
The ComfyUI is a test-server child process, killed and restarted on the same port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from comfyfleet.fleet import Backend
from comfyfleet.testing import ComfyTestServer

from .helpers import finished, make_fleet, prompt_started, submit, submit_followed

# Long enough that neither a lease nor the websocket's reconnect timeout (30 s) can be what
# requeues the task within the waits below.
LEASE = 120.0


@pytest.fixture
async def comfy_process(tmp_path) -> AsyncIterator[Any]:
    """A test-server process (``proc``); ``await restart()`` starts a new one on its port."""
    procs: list[Any] = []

    async def start(port: int = 0, **faults: Any) -> Any:
        proc = await asyncio.to_thread(
            ComfyTestServer.start_subprocess,
            root=tmp_path / "comfy",
            port=port,
            cache="none",
            faults=faults,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        await asyncio.to_thread(proc.stop)


async def until(backend: Backend, pred: Callable[[Backend], bool], timeout: float = 10.0) -> None:
    """Until ``pred(backend)`` holds (its change events; no polling)."""

    async def wait() -> None:
        while True:
            changed = backend.change_event()
            if pred(backend):
                return
            await changed.wait()

    await asyncio.wait_for(wait(), timeout)


async def requeued(queue: Any, task_id: str, timeout: float = 10.0) -> Any:
    async def wait() -> Any:
        async for task in queue.watch(task_id):
            if task.status == "queued":
                return task
        raise AssertionError(f"{task_id} finished instead of being requeued")

    return await asyncio.wait_for(wait(), timeout)


async def test_a_killed_comfyui_requeues_its_task_at_once_and_the_retry_runs_after_restart(
    sqlite_queue, settings_for, comfy_process
) -> None:
    proc = await comfy_process(job_seconds=60)
    settings = settings_for([f"a={proc.url}"], lease_seconds=LEASE, job_timeout=300)
    async with make_fleet(settings, sqlite_queue) as fleet:
        backend = fleet.backend("a")
        task, sub = await submit_followed(sqlite_queue, fleet)
        await prompt_started(sub)
        await asyncio.to_thread(proc.kill)  # SIGKILL mid-job
        await until(backend, lambda b: not b.healthy)
        back = await requeued(sqlite_queue, task.id)
        state = backend.snapshot()
        await comfy_process(port=proc.port)  # ComfyUI restarts on the same port
        [done] = await finished(sqlite_queue, [task.id])
        await until(backend, lambda b: b.healthy)
    assert state["state"] == "unhealthy" and "refused" in state["last_error"]
    assert back.attempts == 1 and back.error["code"] == "comfy_connection_lost"
    assert done.status == "succeeded" and done.attempts == 2
    # The success carries no error; the first attempt's stays in the attempt history.
    assert done.error is None
    [earlier] = done.result["attempt_errors"]
    assert earlier["code"] == "comfy_connection_lost" and earlier["attempt"] == 1


async def test_an_idle_backend_notices_its_comfyui_die_and_come_back(
    sqlite_queue, settings_for, comfy_process
) -> None:
    proc = await comfy_process()
    settings = settings_for([f"a={proc.url}"], lease_seconds=LEASE)
    async with make_fleet(settings, sqlite_queue) as fleet:
        backend = fleet.backend("a")
        [warm] = await submit(sqlite_queue, 1)  # opens the backend's websocket
        await finished(sqlite_queue, [warm.id])
        await until(backend, lambda b: b.state == "idle")
        await asyncio.to_thread(proc.kill)
        await until(backend, lambda b: not b.healthy)  # no task had to fail for it
        await comfy_process(port=proc.port)
        await until(backend, lambda b: b.healthy)
        [after] = await submit(sqlite_queue, 1)
        [after] = await finished(sqlite_queue, [after.id])
    assert after.status == "succeeded" and after.attempts == 1
