"""SQLite point statements on the event loop: answered at once when the queue's thread is
idle, queued behind calls already waiting, never stuck on another process's write lock, and
the WAL still checkpointed (on the thread) although automatic checkpoints are off."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from comfyfleet.queue.sqlite import SqliteQueue
from comfyfleet.queue.sqlite_thread import SqliteThread


async def _connected(path: Path, **kwargs: object) -> SqliteThread:
    thread = SqliteThread(**kwargs)  # type: ignore[arg-type]

    def connect(_: object) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        thread.busy_timeout_ms = 5000
        thread.conn = conn

    await thread.call(connect, alone=True)
    return thread


async def _close(thread: SqliteThread) -> None:
    await thread.call(lambda conn: conn.close() if conn else None, alone=True)
    await asyncio.to_thread(thread.stop)


async def test_a_point_statement_is_answered_on_the_loop_when_the_thread_is_idle(
    tmp_path: Path,
) -> None:
    thread = await _connected(tmp_path / "q.db")
    ran_on: list[int] = []

    def insert(conn: sqlite3.Connection) -> int:
        ran_on.append(threading.get_ident())
        return conn.execute("INSERT INTO t VALUES (1) RETURNING v").fetchone()[0]

    future = thread.call(insert, inline=True)
    assert future.done() and future.result() == 1  # no hop: answered before any await
    assert ran_on == [threading.get_ident()] and thread.inlined == 1
    plain = thread.call(insert)  # not marked inline: the thread runs it
    assert not plain.done()
    assert await plain == 1 and ran_on[-1] != threading.get_ident()
    with sqlite3.connect(tmp_path / "q.db") as other:  # committed, seen by another connection
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    await _close(thread)


async def test_a_failing_inline_statement_undoes_itself(tmp_path: Path) -> None:
    thread = await _connected(tmp_path / "q.db")

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (7)")
        raise sqlite3.IntegrityError("no")

    future = thread.call(insert_then_fail, inline=True)
    assert future.done() and isinstance(future.exception(), sqlite3.IntegrityError)
    count = thread.call(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0])
    assert await count == 0
    await _close(thread)


async def test_an_inline_call_waits_behind_calls_already_queued(tmp_path: Path) -> None:
    thread = await _connected(tmp_path / "q.db")
    release = threading.Event()
    order: list[str] = []

    def slow(conn: sqlite3.Connection) -> None:
        release.wait(10)
        order.append("first")

    def quick(conn: sqlite3.Connection) -> None:
        order.append("second")

    first = thread.call(slow)
    await asyncio.sleep(0)  # (the thread may or may not have taken it yet: both must hold)
    second = thread.call(quick, inline=True)
    assert not second.done()  # the thread is busy or has work waiting: not run here
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and thread.inlined == 0
    await _close(thread)


async def test_inline_never_waits_for_another_process_holding_the_write_lock(
    tmp_path: Path,
) -> None:
    """Another connection (another process, say) holds the write lock: the call is not run on
    the loop (that would block it for the busy timeout) but queued; it commits once the lock
    is released."""
    path = tmp_path / "q.db"
    thread = await _connected(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    future = thread.call(
        lambda conn: conn.execute("INSERT INTO t VALUES (3)").rowcount, inline=True
    )
    assert not future.done() and thread.inlined == 0
    other.execute("COMMIT")  # the thread's BEGIN, waiting in its busy timeout, now gets through
    assert await future == 1
    other.close()
    await _close(thread)


async def test_the_wal_is_checkpointed_although_automatic_checkpoints_are_off(
    tmp_path: Path,
) -> None:
    """Commits on the loop never checkpoint (the connection's automatic checkpoints are off);
    the thread does it every so many calls, so the WAL file stays small however many
    tasks go through."""
    path = tmp_path / "q.db"
    async with SqliteQueue(path) as queue:
        assert queue._thread is not None
        conn = queue._thread.conn
        assert conn is not None
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        payload = {"blob": "x" * 2000}
        for _ in range(3000):
            await queue.submit(payload)
        assert queue._thread.inlined > 0
        wal = Path(f"{path}-wal").stat().st_size
    # without checkpoints the WAL holds every commit's pages (~78 MB here), with them a few
    # hundred commits' worth (~5 MB)
    assert wal < 16 * 1024 * 1024, wal
