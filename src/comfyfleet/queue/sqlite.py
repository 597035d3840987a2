"""The embedded engine: one SQLite file in WAL mode, driven from one dedicated thread.

Every statement runs inside ``BEGIN IMMEDIATE`` (a claim stays atomic even if a second process
opens the file) on the queue's own thread, where concurrent calls share one transaction --
except point statements (`POINT_QUERIES`, and claims), which run on the event loop at once
while the thread is idle: ~15 µs there against ~250 µs for the hop (see `sqlite_thread`).
Wake-ups are in-process only: SQLite cannot notify another process, so one file is served by
one gateway process; use PostgreSQL for replicas.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from comfyfleet.errors import Conflict, QueueError
from comfyfleet.queue.base import Clock, Task, utcnow
from comfyfleet.queue.sqlfiles import load_migrations, load_queries
from comfyfleet.queue.sqlite_thread import SqliteThread
from comfyfleet.queue.sqlqueue import Row, SqlQueue

Q = load_queries("sqlite")
# Statements that touch a row or two through an index: cheap enough to run on the event loop
# when the queue's thread is idle (scans -- lists, stats, positions, purges -- never do).
POINT_QUERIES = frozenset(
    {
        "insert_task",
        "get_task",
        "get_task_by_key",
        "task_deliveries",
        "next_run_at",
        "unclaim",
        "heartbeat",
        "complete",
        "fail",
        "cancel",
        "webhook_delivered",
        "webhook_failed",
    }
)


def _time_out(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _json_out(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _json_in(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class SqliteQueue(SqlQueue):
    time_in = staticmethod(datetime.timestamp)
    time_out = staticmethod(_time_out)
    json_in = staticmethod(_json_in)
    json_out = staticmethod(_json_out)

    def __init__(
        self, path: str | Path, *, clock: Clock = utcnow, busy_timeout: float = 10.0
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.clock = clock
        self.busy_timeout = busy_timeout
        self._thread: SqliteThread | None = None

    async def open(self) -> None:
        if self._thread is None:
            self._thread = SqliteThread()
            await self._call(self._connect, alone=True)
        await self.migrate()

    async def close(self) -> None:
        if self._thread is not None:  # earlier calls answered: cancelled claims handed back
            await self._thread.call(_nothing, alone=True)
            await self._settle_hand_backs()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await thread.call(_close, alone=True)
        await asyncio.to_thread(thread.stop)

    def _connect(self, _: None) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes; fast in WAL
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the thread checkpoints (see sqlite_thread)
        conn.execute("PRAGMA foreign_keys=ON")
        assert self._thread is not None
        self._thread.busy_timeout_ms = int(self.busy_timeout * 1000)
        self._thread.conn = conn

    async def _call(
        self,
        fn: Any,
        *,
        alone: bool = False,
        orphaned: Callable[[Any], None] | None = None,
        inline: bool = False,
    ) -> Any:
        """Run ``fn(conn)`` on the queue's thread (batched into a shared transaction), or at
        once on this loop when ``inline`` and the thread is idle (see `sqlite_thread`)."""
        if self._thread is None:
            raise QueueError("the queue is not open")
        try:
            return await self._thread.call(fn, alone=alone, orphaned=orphaned, inline=inline)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"sqlite: {exc}") from exc
        except sqlite3.Error as exc:
            raise QueueError(f"sqlite: {exc}") from exc

    async def _rows(self, query: str, params: dict[str, Any]) -> builtins.list[Row]:
        sql = Q[query]
        return await self._call(
            lambda conn: conn.execute(sql, params).fetchall(), inline=query in POINT_QUERIES
        )

    async def _claim_row(self, params: dict[str, Any], query: str = "claim") -> Row | None:
        """The thread commits a claim even if we are cancelled meanwhile: then its result
        goes to `_hand_back` (no shielding: an extra loop hop per claim costs throughput)."""
        sql = Q[query]

        def orphaned(rows: builtins.list[Row]) -> None:
            self._hand_back(rows[0] if rows else None)

        rows = await self._call(
            lambda conn: conn.execute(sql, params).fetchall(), orphaned=orphaned, inline=True
        )
        return rows[0] if rows else None

    def _targets(self, targets: Collection[str] | None) -> str | None:
        return None if targets is None else json.dumps(builtins.list(targets))

    def _changed(self, tasks: Collection[Task]) -> None:
        for task in tasks:
            self._changes.fire(task.id, task)
            if task.status == "queued":
                self._work.fire()

    def _progressed(self, task_id: str) -> None:
        self._changes.fire(task_id)

    # --- migrations ------------------------------------------------------------------------------
    async def migrate(self) -> builtins.list[int]:
        return await self._call(self._migrate, alone=True)

    def _migrate(self, conn: sqlite3.Connection) -> builtins.list[int]:
        conn.execute(Q["create_migrations_table"])
        applied_now = []
        for migration in load_migrations("sqlite"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = {r[0] for r in conn.execute(Q["applied_migrations"])}
                if migration.version not in done:
                    for statement in _statements(migration.sql):
                        conn.execute(statement)
                    conn.execute(
                        Q["record_migration"],
                        {"version": migration.version, "name": migration.name, "now": self._now()},
                    )
                    applied_now.append(migration.version)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return applied_now


def _statements(script: str) -> builtins.list[str]:
    """Split a migration into statements, trigger bodies kept whole."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements


def _nothing(_: sqlite3.Connection | None) -> None:
    """A barrier: once it is answered, every call queued before it has been."""


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        conn.close()
