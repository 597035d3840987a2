"""Two gateway replicas (two Fleets, each with its own PostgreSQL connections and its own
backends) on one queue: every task runs exactly once, and both replicas dispatch.

Completion is awaited on the replicas' event buses, which is how each replica learns of its own
tasks finishing; the queue's own watch/claim interplay is covered in tests/queue."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from comfyfleet.fleet import Fleet
from comfyfleet.queue import Queue, Task

from .helpers import executions, make_fleet, payload

pytestmark = pytest.mark.postgres


async def run_all(producer: Queue, fleets: list[Fleet], n: int, timeout: float = 60) -> list[Task]:
    """Submit n counted tasks through ``producer``; each once a replica reports it finished."""
    ids = [f"t{uuid.uuid4().hex[:12]}" for _ in range(n)]
    subs = {i: [fleet.events.subscribe(i) for fleet in fleets] for i in ids}

    async def final_event(task_id: str) -> None:
        async def follow(sub) -> None:
            async for event in sub:
                if event.get("type") == "status" and event["status"] in ("succeeded", "failed"):
                    return
            await asyncio.Event().wait()  # closed unfinished: let the other replica answer

        waits = [asyncio.create_task(follow(sub)) for sub in subs[task_id]]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        for sub in subs[task_id]:
            sub.close()

    for task_id in ids:
        await producer.submit(payload(task_id), task_id=task_id)
    await asyncio.wait_for(asyncio.gather(*(final_event(i) for i in ids)), timeout)
    return [await producer.get(i) for i in ids]


async def test_two_replicas_never_run_a_task_twice_and_both_dispatch(
    pg_queues, start_servers, settings_for
) -> None:
    servers = await start_servers(4, job_seconds=0.02)
    queue_a, queue_b, producer = await pg_queues(), await pg_queues(), await pg_queues()
    settings_a = settings_for([f"a{i}={s.url}" for i, s in enumerate(servers[:2])])
    settings_b = settings_for([f"b{i}={s.url}" for i, s in enumerate(servers[2:])])
    async with make_fleet(settings_a, queue_a) as a, make_fleet(settings_b, queue_b) as b:
        # Submitted through a third connection: wake-ups reach both replicas by NOTIFY.
        done = await run_all(producer, [a, b], 40)
        ran_a = sum(x["executed"] for x in a.backends())
        ran_b = sum(x["executed"] for x in b.backends())
    assert {t.status for t in done} == {"succeeded"}
    outputs = [s.output_dir for s in servers]
    assert [executions(outputs, t.id) for t in done] == [1] * 40
    assert all(t.attempts == 1 for t in done)
    assert ran_a > 0 and ran_b > 0 and ran_a + ran_b == 40
    assert {t.backend[0] for t in done} == {"a", "b"}


async def test_a_task_submitted_on_one_replica_wakes_the_other(
    pg_queues, start_servers, settings_for
) -> None:
    [srv] = await start_servers(1)
    idle_replica, producer = await pg_queues(), await pg_queues()
    async with make_fleet(settings_for([f"only={srv.url}"]), idle_replica) as fleet:
        [done] = await run_all(producer, [fleet], 1, timeout=20)
    assert done.status == "succeeded" and done.backend == "only"
