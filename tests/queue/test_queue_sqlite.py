"""SQLite specifics: the URL forms, WAL, durability across reopen, and two handles on one file
claiming safely (BEGIN IMMEDIATE) even though they cannot wake each other."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from comfyfleet.errors import Conflict
from comfyfleet.queue import open_queue
from comfyfleet.queue.postgres import PostgresQueue
from comfyfleet.queue.sqlfiles import load_migrations
from comfyfleet.queue.sqlite import Q, SqliteQueue, _statements
from comfyfleet.queue.sqlite_thread import SqliteThread


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel/q.db", "rel/q.db"),
        ("sqlite:////abs/q.db", "/abs/q.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("/data/q.db", "/data/q.db"),
        (Path("data/q.db"), "data/q.db"),
    ],
)
def test_open_queue_picks_sqlite(url: str | Path, path: str) -> None:
    queue = open_queue(url)
    assert isinstance(queue, SqliteQueue) and queue.path == path


def test_open_queue_picks_postgres_without_connecting() -> None:
    assert isinstance(open_queue("postgresql://u@db.invalid/x", schema="s"), PostgresQueue)
    assert isinstance(open_queue("postgres://u@db.invalid/x"), PostgresQueue)


async def test_wal_mode_and_migrations_are_tracked(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with open_queue(path) as queue:
        assert await queue.migrate() == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1, 2, 3]


async def test_a_queue_from_before_fingerprints_is_upgraded_and_keeps_its_keys(
    tmp_path: Path,
) -> None:
    """Migration 0002 on a file made by 0001 alone: the old keyed task answers its key (its
    fingerprint is unknown, so any body replays it), new ones are compared."""
    path = tmp_path / "old.db"
    (first,) = [m for m in load_migrations("sqlite") if m.version == 1]
    with sqlite3.connect(path) as conn:
        conn.execute(Q["create_migrations_table"])
        for statement in _statements(first.sql):
            conn.execute(statement)
        conn.execute(Q["record_migration"], {"version": 1, "name": first.name, "now": 0.0})
        conn.execute(
            "INSERT INTO tasks (id, payload, idempotency_key, run_at, created_at)"
            " VALUES ('old-task', '{}', 'old-key', 0, 0)"
        )
    async with open_queue(path) as queue:
        again, created = await queue.submit({"v": 2}, idempotency_key="old-key", fingerprint="f")
        assert not created and again.id == "old-task"
        await queue.submit({"v": 1}, idempotency_key="new-key", fingerprint="f1")
        with pytest.raises(Conflict):
            await queue.submit({"v": 2}, idempotency_key="new-key", fingerprint="f2")
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1, 2, 3]


async def test_tasks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with open_queue(f"sqlite:///{path}") as queue:
        task, _ = await queue.submit({"keep": True}, priority=2, idempotency_key="k")
    async with open_queue(path) as queue:
        again, created = await queue.submit({}, idempotency_key="k")
        assert not created and again.payload == {"keep": True}
        claimed = await queue.claim("agent", 30)
        assert claimed is not None and claimed.id == task.id


async def test_memory_database_works(tmp_path: Path) -> None:
    async with open_queue("sqlite://") as queue:
        await queue.submit({})
        assert await queue.claim("agent", 30) is not None


async def test_two_handles_on_one_file_never_share_a_task(tmp_path: Path) -> None:
    a, b = SqliteQueue(tmp_path / "q.db"), SqliteQueue(tmp_path / "q.db")
    await a.open()
    await b.open()
    try:
        for n in range(100):
            await a.submit({"n": n})
        got: list[str] = []

        async def drain(queue: SqliteQueue) -> None:
            while (task := await queue.claim("agent", 30)) is not None:
                got.append(task.id)

        await asyncio.gather(drain(a), drain(b), drain(a), drain(b))
        assert len(got) == len(set(got)) == 100
    finally:
        await a.close()
        await b.close()


async def test_claim_uses_the_partial_index(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q.db"):
        pass
    params = {"owner": "a", "lease_seconds": 1, "backend": None, "targets": None, "now": 0}
    with sqlite3.connect(tmp_path / "q.db") as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + Q["claim"], params).fetchall()
    plan = " ".join(str(row[-1]) for row in rows)
    assert "USING INDEX tasks_claim" in plan and "TEMP B-TREE" not in plan


async def test_closed_queue_refuses_work(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    with pytest.raises(Exception, match="not open"):
        await queue.submit({})


async def test_calls_share_a_transaction_but_fail_alone(tmp_path: Path) -> None:
    thread = SqliteThread()
    try:

        def connect(_: None) -> None:
            thread.conn = sqlite3.connect(
                tmp_path / "t.db", isolation_level=None, check_same_thread=False
            )
            thread.conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")

        await thread.call(connect, alone=True)
        gate = threading.Event()
        blocker = thread.call(lambda _: gate.wait(10), alone=True)  # holds the thread
        calls = [
            thread.call(lambda c: c.execute("INSERT INTO t VALUES (1)").rowcount),
            thread.call(lambda c: c.execute("INSERT INTO t VALUES (1)")),  # violates UNIQUE
            thread.call(lambda c: c.execute("INSERT INTO t VALUES (2)").rowcount),
            thread.call(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]),
        ]
        gate.set()
        await blocker
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0] == 1 and results[2] == 1 and results[3] == 2
        assert isinstance(results[1], sqlite3.IntegrityError)
        rows = await thread.call(lambda c: c.execute("SELECT v FROM t ORDER BY v").fetchall())
        assert rows == [(1,), (2,)]
        await thread.call(lambda c: c.close(), alone=True)
    finally:
        await asyncio.to_thread(thread.stop)
