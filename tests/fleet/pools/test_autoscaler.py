"""The worker manager inside a real Fleet on a real queue, with local workers running the
project's ComfyUI test server: from zero to max and back, kill -9 of a busy worker, crash-loop
backoff and the start cap, adoption, and only idle workers being stopped."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyfleet.fleet.pools import WorkerManager, parse_pool
from comfyfleet.fleet.pools.pool import Pool
from comfyfleet.queue import Queue

from ..helpers import (
    executions,
    finished,
    make_fleet,
    make_settings,
    prompt_started,
    submit,
    submit_followed,
)
from .cases import CRASH, local_options


def pool_entry(name: str = "cpu", **keys: Any) -> dict[str, Any]:
    return {"name": name, "provider": "local", **local_options(), **keys}


def manager_of(fleet: Any) -> WorkerManager:
    assert fleet.workers is not None
    return fleet.workers


def pool_of(fleet: Any, name: str = "cpu") -> Pool:
    return manager_of(fleet).pools[name]


def states(fleet: Any, name: str = "cpu") -> list[str]:
    workers = pool_of(fleet, name).workers.values()
    return sorted(w.state for w in workers if w.refresh() or True)


def outputs(tmp_path: Path) -> list[Path]:
    """Every worker's own output folder (kept while it lives; counted via the artifact
    store otherwise)."""
    return list((tmp_path / "data" / "workers").glob("*/*/output"))


async def test_burst_from_zero_to_max_and_back_to_zero(tmp_path: Path, sqlite_queue: Queue) -> None:
    entry = pool_entry(min=0, max=2, cooldown=0.3, **{"command": local_options(0.2)["command"]})
    settings = make_settings(tmp_path, [], pools=[entry])
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = manager_of(fleet)
        assert states(fleet) == []  # nothing runs before a task arrives
        first, sub = await submit_followed(sqlite_queue, fleet)
        tasks = [first, *await submit(sqlite_queue, 7)]
        event = await asyncio.wait_for(sub.__anext__(), 30)  # the first thing it hears
        assert event["stage"] == "waiting_for_worker"
        assert "cold start, pool cpu" in event["message"]
        await manager.until(lambda m: len(m.pools["cpu"].active()) == 2, 60)
        done = await finished(sqlite_queue, [t.id for t in tasks], 120)
        assert {t.status for t in done} == {"succeeded"}
        assert {t.backend for t in done} <= {
            f"cpu/{w.id}" for w in [*pool_of(fleet).workers.values(), *pool_of(fleet).finished]
        }
        assert len({t.backend for t in done}) == 2  # both workers ran tasks
        await manager.until(lambda m: not m.pools["cpu"].workers, 30)
        assert pool_of(fleet).started_total == 2
        assert [w.state for w in pool_of(fleet).finished] == ["stopped", "stopped"]
        assert fleet.backends() == []  # the workers' backends are gone too
        # ... and back from zero.
        again = await submit(sqlite_queue, 1)
        [task] = await finished(sqlite_queue, [again[0].id], 60)
        assert task.status == "succeeded"
        assert pool_of(fleet).started_total == 3


async def test_kill_9_of_a_busy_worker_loses_nothing_and_it_is_replaced(
    tmp_path: Path, sqlite_queue: Queue
) -> None:
    entry = pool_entry(min=1, max=1, cooldown=30, **{"command": local_options(1.0)["command"]})
    settings = make_settings(tmp_path, [], pools=[entry], lease_seconds=3.0)
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = manager_of(fleet)
        await manager.until(lambda m: states(fleet) == ["idle"], 60)
        [victim] = pool_of(fleet).workers.values()
        task, sub = await submit_followed(sqlite_queue, fleet)
        await prompt_started(sub)  # ComfyUI is executing it (1 s per prompt)
        assert states(fleet) == ["busy"]
        assert victim.handle is not None
        os.killpg(int(victim.handle.ref), signal.SIGKILL)
        [done] = await finished(sqlite_queue, [task.id], 90)
        assert done.status == "succeeded"
        assert done.status == "succeeded" and done.error is None
        assert victim.state == "failed"
        assert victim.reason and "SIGKILL" in victim.reason
        [replacement] = pool_of(fleet).workers.values()
        assert replacement.id != victim.id
        assert done.backend == f"cpu/{replacement.id}"
        # Ran to completion once, on the replacement (the victim's folders are gone with it).
        assert executions(outputs(tmp_path), task.id) == 1


async def test_a_crash_loop_backs_off_and_the_start_cap_holds(
    tmp_path: Path, sqlite_queue: Queue
) -> None:
    entry = pool_entry(min=1, max=1, starts_per_minute=3, command=CRASH)
    settings = make_settings(tmp_path, [], pools=[entry])
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = manager_of(fleet)
        pool = pool_of(fleet)
        await manager.until(lambda m: pool.failed_total >= 3, 60)
        loop = asyncio.get_running_loop()
        assert pool.started_total == 3  # the cap: no fourth start within the minute
        assert pool.crashes == 3
        assert pool._start_allowed_at(loop.time()) - loop.time() > 30
        failed = [w.view() for w in pool.finished]
        assert all(w["state"] == "failed" for w in failed)
        assert "died while starting" in failed[0]["reason"]
        assert "boom at start" in failed[0]["logs"]
        assert manager.counts()["failed_workers"] == 3


async def test_only_idle_workers_are_stopped_when_scaling_down(
    tmp_path: Path, sqlite_queue: Queue
) -> None:
    entry = pool_entry(min=0, max=2, cooldown=0.2, **{"command": local_options()["command"]})
    # One task per worker at a time (no prefetch), so the two tasks land on two workers.
    settings = make_settings(tmp_path, [], pools=[entry], prefetch_depth=0)
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = manager_of(fleet)
        [slow] = await submit(sqlite_queue, 1, slow_steps=60)  # ~3 s on one worker
        [quick] = await submit(sqlite_queue, 1)
        await finished(sqlite_queue, [quick.id], 60)
        await manager.until(lambda m: "busy" in states(fleet), 30)
        busy = next(w for w in pool_of(fleet).workers.values() if w.state == "busy")
        # The idle one goes after the cooldown; the busy one keeps running its task.
        await manager.until(lambda m: len(m.pools["cpu"].workers) == 1, 30)
        assert busy.state == "busy"
        [done] = await finished(sqlite_queue, [slow.id], 60)
        assert done.status == "succeeded" and done.attempts == 1
        await manager.until(lambda m: not m.pools["cpu"].workers, 30)


async def test_a_new_manager_adopts_running_workers(tmp_path: Path, sqlite_queue: Queue) -> None:
    entry = pool_entry(min=1, max=1, cooldown=30)
    settings = make_settings(tmp_path, [], pools=[entry])
    async with make_fleet(settings, sqlite_queue) as fleet:
        await manager_of(fleet).until(lambda m: states(fleet) == ["idle"], 60)
        [original] = pool_of(fleet).workers.values()
        other_settings = make_settings(tmp_path, [])
        async with make_fleet(other_settings, sqlite_queue) as other:
            heir = WorkerManager(other, [parse_pool(entry)])
            assert await heir.adopt() == 1
            await heir.until(
                lambda m: [w.state for w in m.pools["cpu"].workers.values()] == ["idle"], 30
            )
            [adopted] = heir.pools["cpu"].workers.values()
            assert adopted.id == original.id and adopted.adopted
            assert adopted.handle is not None and original.handle is not None
            assert adopted.handle.url == original.handle.url
            assert [b["name"] for b in other.backends()] == [f"cpu/{original.id}"]
            # (heir is not started: leaving the block stops nothing of the original's)
            await heir.pools["cpu"].shutdown()


@pytest.mark.parametrize("bad", ["cpu=local:max=two", "cpu=nowhere:max=1", "cpu=local:mxa=1"])
def test_bad_pool_specs_are_one_line_errors(bad: str) -> None:
    from comfyfleet.fleet.pools import PoolSpecError

    with pytest.raises(PoolSpecError) as info:
        parse_pool(bad)
    assert "\n" not in info.value.message and "'cpu'" in info.value.message


async def test_a_worker_that_stops_answering_is_replaced(
    tmp_path: Path, sqlite_queue: Queue
) -> None:
    entry = pool_entry(min=1, max=1, unhealthy_after=1.0, health_interval=0.2)
    settings = make_settings(tmp_path, [], pools=[entry])
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = manager_of(fleet)
        await manager.until(lambda m: states(fleet) == ["idle"], 60)
        [frozen] = pool_of(fleet).workers.values()
        assert frozen.handle is not None and frozen.handle.url is not None
        async with httpx.AsyncClient(trust_env=False) as http:  # alive, but answers nothing
            await http.post(f"{frozen.handle.url}/_testing/faults", json={"freeze": True})
        await manager.until(lambda m: frozen.state == "failed", 30)
        assert frozen.reason and frozen.reason.startswith("health checks failing for 1 s")
        await manager.until(lambda m: states(fleet) == ["idle"], 60)
        [replacement] = pool_of(fleet).workers.values()
        assert replacement.id != frozen.id
        [task] = await submit(sqlite_queue, 1)
        [done] = await finished(sqlite_queue, [task.id], 60)
        assert done.status == "succeeded" and done.backend == f"cpu/{replacement.id}"
