"""PostgreSQL as many gateway replicas see it: separate pools on one schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from comfyfleet.errors import Conflict
from comfyfleet.queue import open_queue
from comfyfleet.queue.postgres import PostgresQueue, Q
from comfyfleet.queue.sqlfiles import load_migrations
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


async def test_a_claim_that_skipped_a_task_while_it_was_being_watched_is_woken(
    make_pg: Make, pg_url: str, pg_schema: str
) -> None:
    """Watching row-locks the task until its commit; a claim meeting the lock skips the task,
    and the watch's commit must wake it again (here nothing else does: no locked-row retry)."""
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    b.locked_retry_first = b.locked_retry_max = 3600.0
    try:
        task, _ = await a.submit({})
        locked, commit = asyncio.Event(), asyncio.Event()
        rows = a._rows

        async def watch_held_open(query: str, params: dict[str, Any]) -> Any:
            """The real watch statement, its transaction kept open until the test says."""
            if query != "watch_task":
                return await rows(query, params)
            options = f"-c search_path={pg_schema}"
            async with (
                await psycopg.AsyncConnection.connect(
                    pg_url, options=options, row_factory=dict_row
                ) as conn,
                conn.transaction(),
            ):
                result = await (await conn.execute(Q[query], params)).fetchall()
                locked.set()
                await commit.wait()
            return result

        a._rows = watch_held_open  # type: ignore[method-assign]
        watcher = asyncio.create_task(a.wait_finished(task.id, 60))
        await asyncio.wait_for(locked.wait(), 10)
        waiting = spy_before_wait(b)
        claimer = asyncio.create_task(b.claim("agent-b", 30, wait=60))
        await asyncio.wait_for(waiting.wait(), 10)  # it found the task locked and skipped it
        commit.set()
        claimed = await asyncio.wait_for(claimer, 10)  # woken by the watch, not the 60 s
        assert claimed is not None and claimed.id == task.id
        await b.complete(task.id, "agent-b", {})
        assert (await asyncio.wait_for(watcher, 10)).status == "succeeded"
    finally:
        await a.close()
        await b.close()


async def test_a_claim_that_skipped_a_locked_task_looks_again(
    make_pg: Make, pg_url: str, pg_schema: str
) -> None:
    """Whoever holds the lock may never announce work (here: any other transaction)."""
    queue = make_pg()
    await queue.open()
    try:
        task, _ = await queue.submit({})
        options = f"-c search_path={pg_schema}"
        async with await psycopg.AsyncConnection.connect(pg_url, options=options) as admin:
            async with admin.transaction():
                await admin.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", [task.id])
                waiting = spy_before_wait(queue)
                claimer = asyncio.create_task(queue.claim("agent", 30, wait=60))
                await asyncio.wait_for(waiting.wait(), 10)  # it skipped the locked task
            # the lock is released and nothing announces work
            claimed = await asyncio.wait_for(claimer, 10)  # not the 60 s
        assert claimed is not None and claimed.id == task.id
    finally:
        await queue.close()


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


async def test_a_schema_from_before_fingerprints_is_upgraded(
    make_pg: Make, pg_url: str, pg_schema: str
) -> None:
    """Migration 0002 on a schema made by 0001 alone: the old keyed task answers its key (its
    fingerprint is unknown, so any body replays it), new ones are compared."""
    (first,) = [m for m in load_migrations("postgres") if m.version == 1]
    with psycopg.connect(pg_url, options=f"-c search_path={pg_schema}") as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(Q["create_migrations_table"])
        conn.execute(first.sql.encode())
        conn.execute(Q["record_migration"], {"version": 1, "name": first.name})
        conn.execute(
            "INSERT INTO tasks (id, payload, idempotency_key, run_at, created_at)"
            " VALUES ('old-task', '{}', 'old-key', now(), now())"
        )
    queue = make_pg()
    await queue.open()
    try:
        again, created = await queue.submit({"v": 2}, idempotency_key="old-key", fingerprint="f")
        assert not created and again.id == "old-task"
        await queue.submit({"v": 1}, idempotency_key="new-key", fingerprint="f1")
        with pytest.raises(Conflict):
            await queue.submit({"v": 2}, idempotency_key="new-key", fingerprint="f2")
        assert await queue.migrate() == []
    finally:
        await queue.close()
    with psycopg.connect(pg_url, options=f"-c search_path={pg_schema}") as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3]
