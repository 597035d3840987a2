"""PostgreSQL as many gateway replicas see it: separate pools on one schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from comfyfleet.queue import open_queue
from comfyfleet.queue.postgres import PostgresQueue, Q
from comfyfleet.queue.testing import FakeClock, spy_after_get, spy_before_wait

pytestmark = pytest.mark.postgres

Make = Callable[..., PostgresQueue]


async def test_replicas_never_claim_a_task_twice(make_pg: Make) -> None:
    a, b = make_pg(max_size=4), make_pg(max_size=4)
    await asyncio.gather(a.open(), b.open())  # concurrent migrations serialize
    try:
        submitted = {(await a.submit({"n": n}, priority=n % 3))[0].id for n in range(200)}
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        async def drain(queue: PostgresQueue, name: str, worker: int) -> None:
            owner = f"{name}-{worker}"
            while (task := await queue.claim(owner, 30)) is not None:
                claimed[name].append(task.id)
                await queue.complete(task.id, owner, {"by": owner})

        await asyncio.gather(
            *(drain(a, "a", w) for w in range(4)), *(drain(b, "b", w) for w in range(4))
        )
        every = claimed["a"] + claimed["b"]
        assert len(every) == len(set(every)) == 200
        assert set(every) == submitted
        assert claimed["a"] and claimed["b"]
        assert (await a.stats()).counts["succeeded"] == 200
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_submit_on_one_replica_wakes_a_claimer_on_another(make_pg: Make) -> None:
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    try:
        waiting = spy_before_wait(b)
        claimer = asyncio.create_task(b.claim("agent-b", 30, wait=60))
        await asyncio.wait_for(waiting.wait(), 10)
        task, _ = await a.submit({"from": "a"})
        claimed = await asyncio.wait_for(claimer, 10)  # woken by NOTIFY, not the 60 s
        assert claimed is not None and claimed.id == task.id
    finally:
        await a.close()
        await b.close()


async def test_a_finish_on_one_replica_wakes_a_waiter_on_another(make_pg: Make) -> None:
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    try:
        task, _ = await a.submit({})
        looked = spy_after_get(b)
        waiter = asyncio.create_task(b.wait_finished(task.id, 60))
        await asyncio.wait_for(looked.wait(), 10)
        await a.claim("agent-a", 30)
        await a.complete(task.id, "agent-a", {"done": True})
        finished = await asyncio.wait_for(waiter, 10)
        assert finished.status == "succeeded"
    finally:
        await a.close()
        await b.close()


async def test_listener_survives_a_dropped_connection(
    make_pg: Make, pg_url: str, pg_schema: str
) -> None:
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
                [f"comfyfleet-queue:{pg_schema}"],
            ).fetchall()
        assert len(killed) == 2
        # after reconnecting, the listener wakes everyone once; then NOTIFY works again
        waiting = spy_before_wait(b)
        claimer = asyncio.create_task(b.claim("agent-b", 30, wait=60))
        await asyncio.wait_for(waiting.wait(), 10)
        task, _ = await a.submit({})
        claimed = await asyncio.wait_for(claimer, 20)
        assert claimed is not None and claimed.id == task.id
    finally:
        await a.close()
        await b.close()


async def test_claim_uses_the_partial_index(
    make_pg: Make, pg_url: str, pg_schema: str, clock: FakeClock
) -> None:
    queue = make_pg()
    await queue.open()
    try:
        with psycopg.connect(pg_url, autocommit=True, options=f"-c search_path={pg_schema}") as c:
            c.execute(
                "INSERT INTO tasks (id, priority, payload, run_at, created_at)"
                " SELECT 'bulk-' || n, n %% 5, '{}', %(now)s, %(now)s"
                " FROM generate_series(1, 20000) AS n",
                {"now": clock.now},
            )
            c.execute("ANALYZE tasks")
            params = {"owner": "a", "lease_seconds": 1, "backend": None, "targets": None}
            rows = c.execute("EXPLAIN " + Q["claim"], {**params, "now": clock.now}).fetchall()
        plan = "\n".join(row[0] for row in rows)
        assert "tasks_claim" in plan and "Sort" not in plan
        task = await queue.claim("agent", 30)
        assert task is not None and task.priority == 4
    finally:
        await queue.close()


async def test_open_queue_picks_postgres(pg_url: str, pg_schema: str) -> None:
    async with open_queue(pg_url, schema=pg_schema) as queue:
        assert isinstance(queue, PostgresQueue)
        task, _ = await queue.submit({"via": "url"})
        assert (await queue.get(task.id)).payload == {"via": "url"}


def test_schema_names_are_validated(pg_url: str) -> None:
    with pytest.raises(ValueError):
        PostgresQueue(pg_url, schema='x"; DROP TABLE tasks; --')


async def test_replicas_never_take_the_same_webhook_delivery(make_pg: Make) -> None:
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    try:
        for _ in range(30):
            task, _ = await a.submit({}, webhook_url="https://hooks.example/x")
            await a.cancel(task.id)
        batches = await asyncio.gather(*(q.due_webhooks(limit=4) for q in (a, b) * 6))
        taken = [d.id for batch in batches for d in batch]
        assert len(taken) == len(set(taken)) == 30
    finally:
        await a.close()
        await b.close()
