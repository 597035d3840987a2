"""Two gateway replicas on one PostgreSQL queue: exactly one worker manager acts (advisory
lock); when it dies, the other takes over and adopts the running worker."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.fleet.pools import autoscaler

from ..helpers import finished, make_fleet, make_settings, submit
from .cases import local_options


async def test_one_leader_scales_and_a_successor_adopts_its_workers(
    tmp_path: Path,
    pg_url: str,
    pg_schema: str,
    pg_queues: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(autoscaler, "LEADER_RETRY", 0.2)
    entry = {"name": "cpu", "provider": "local", "min": 1, "max": 1, "cooldown": 30,
             **local_options()}  # fmt: skip
    options = {"pools": [entry], "database_url": pg_url, "database_schema": pg_schema}
    first_queue, second_queue = await pg_queues(), await pg_queues()
    # Both replicas share the data dir (one machine): local workers are listed from there.
    first = make_fleet(make_settings(tmp_path, [], **options), first_queue)
    second = make_fleet(make_settings(tmp_path, [], **options), second_queue)
    async with first, second:
        managers = [first.workers, second.workers]
        leader, follower = managers if managers[0].leader else managers[::-1]
        assert [leader.leader, follower.leader] == [True, False]
        await leader.until(lambda m: [w.state for w in m.pools["cpu"].workers.values()]
                           == ["idle"], 60)  # fmt: skip
        [worker] = leader.pools["cpu"].workers.values()
        assert follower.pools["cpu"].workers == {}  # the follower started nothing

        # The leader dies without stopping its workers (its loop ends, its session closes).
        for task in (leader._loop_task, leader._listener):
            assert task is not None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await leader.leadership.release()

        await follower.until(lambda m: m.leader and len(m.pools["cpu"].workers) == 1, 30)
        [adopted] = follower.pools["cpu"].workers.values()
        assert adopted.id == worker.id and adopted.adopted
        await follower.until(lambda m: adopted.state == "idle", 30)
        assert follower.pools["cpu"].started_total == 0  # adopted, not started anew

        # The successor's fleet runs tasks on the adopted worker.
        leader_fleet = first if leader is first.workers else second
        follower_fleet = second if leader_fleet is first else first
        await leader_fleet.remove_backend(f"cpu/{worker.id}")
        [task] = await submit(follower_fleet.queue, 1)
        [done] = await finished(follower_fleet.queue, [task.id], 60)
        assert done.status == "succeeded" and done.backend == f"cpu/{worker.id}"
        leader.pools["cpu"].workers.clear()  # owned by the successor now
