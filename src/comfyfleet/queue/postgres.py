"""The scale-out engine: PostgreSQL shared by many gateway replicas.

Claims use ``FOR UPDATE SKIP LOCKED`` so replicas never take the same task and never wait on
each other. Every replica LISTENs on one dedicated connection and turns notifications into
in-process wake-ups: ``cf_task.<schema>`` (payload: task id) comes from a trigger when a
*watched* task changes; ``cf_work.<schema>`` is sent by the replica that made a task claimable,
right after its commit, at most one NOTIFY in flight and the rest coalesced. NOTIFY holds a
cluster-wide lock through its transaction's commit, so notifying from the submit transaction
itself halves submit throughput; the price of doing it afterwards is that a replica dying
between the two leaves remote claimers asleep until their ``wait`` runs out. If the LISTEN
connection drops, every local waiter is woken once it is back (notes may have been missed).
A claim that skipped a due task because some other statement held its row lock looks again
shortly (see `EventQueue.claim`), whether or not that statement announces anything.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from comfyfleet.errors import Conflict, QueueError
from comfyfleet.queue.base import Clock, Task, utcnow
from comfyfleet.queue.sqlfiles import load_migrations, load_queries
from comfyfleet.queue.sqlqueue import Row, SqlQueue

Q = load_queries("postgres")
log = logging.getLogger(__name__)
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def _same(value: Any) -> Any:
    return value


def _name_row(cursor: Any) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Rows as dicts, naming columns straight from the result (psycopg's `dict_row` builds a
    full column description per result, a visible cost on the claim path)."""
    result = cursor.pgresult
    names = [result.fname(i).decode() for i in range(result.nfields)] if result else []

    def make(values: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(names, values, strict=True))

    return make


class PostgresQueue(SqlQueue):
    time_in = staticmethod(_same)
    time_out = staticmethod(_same)  # the session's TimeZone is UTC
    json_in = staticmethod(Jsonb)
    json_out = staticmethod(_same)

    def __init__(
        self,
        url: str,
        *,
        schema: str = "comfyfleet",
        clock: Clock = utcnow,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if not _SCHEMA.match(schema):
            raise ValueError(f"schema must match {_SCHEMA.pattern}: {schema!r}")
        self.url = url
        self.schema = schema
        self.clock = clock
        self.connect_timeout = connect_timeout
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": f"-c search_path={schema} -c TimeZone=UTC",
            "keepalives": 1,
            "keepalives_idle": 30,
            "application_name": f"comfyfleet-queue:{schema}",
        }
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={**self._connect_kwargs, "row_factory": _name_row},
            open=False,
            name=f"comfyfleet-queue-{schema}",
        )
        self._channels = {f"cf_work.{schema}": "work", f"cf_task.{schema}": "task"}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._announcer: asyncio.Task[None] | None = None
        self._announce_again = False

    # --- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self.connect_timeout)
        except psycopg.Error as exc:
            raise QueueError(f"postgres: cannot connect: {exc}") from exc
        try:
            await self.migrate()
        except BaseException:
            await self._pool.close()
            raise
        if self._listener is None:
            self._listening.clear()
            self._listener = asyncio.create_task(self._listen(), name="comfyfleet-queue-listen")
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._listening.wait()
            except TimeoutError:
                await self.close()
                raise QueueError("postgres: could not LISTEN for notifications") from None

    async def close(self) -> None:
        await self._settle_hand_backs()
        if self._announcer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.connect_timeout):
                    await self._announcer
            self._announcer = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()

    async def migrate(self) -> builtins.list[int]:
        applied_now = []
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(Q["lock_migrations"], {"schema": self.schema})
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
                await conn.execute(Q["create_migrations_table"])
                cur = await conn.execute(Q["applied_migrations"])
                done = {row["version"] for row in await cur.fetchall()}
                for migration in load_migrations("postgres"):
                    if migration.version in done:
                        continue
                    await conn.execute(migration.sql.encode())  # no params: many statements
                    params = {"version": migration.version, "name": migration.name}
                    await conn.execute(Q["record_migration"], params)
                    applied_now.append(migration.version)
        except psycopg.Error as exc:
            raise QueueError(f"postgres: migration failed: {exc}") from exc
        return applied_now

    # --- statements ------------------------------------------------------------------------
    async def _rows(self, query: str, params: dict[str, Any]) -> builtins.list[Row]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(Q[query], params)
                return await cur.fetchall()  # every named query returns rows
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(f"postgres: {exc.diag.message_primary}") from exc
        except psycopg.Error as exc:
            raise QueueError(f"postgres: {exc}") from exc

    # --- notifications ---------------------------------------------------------------------
    async def _watching(self, task_id: str) -> None:
        """Mark the task watched, then, if it is queued, announce work once that committed.

        The marking UPDATE row-locks the task until its commit, and a claim meeting the lock
        skips the task (SKIP LOCKED) with nothing to wake it again: announcing after the commit
        wakes every claimer that may have skipped it. The lock itself stays, as it is what
        orders a watch with a concurrent change: a change either waits for the watch and
        then NOTIFYs, or commits before the watch, whose caller's first look then sees it."""
        rows = await self._rows("watch_task", {"id": task_id})
        if rows and rows[0]["status"] == "queued":
            self._announce_work()

    def _changed(self, tasks: Collection[Task]) -> None:
        for task in tasks:  # this replica's waiters need not wait for the NOTIFY
            self._changes.fire(task.id, task)
        if any(task.status == "queued" for task in tasks):
            self._announce_work()

    def _announce_work(self) -> None:
        """Wake claimers here at once and on every replica by NOTIFY (after our commit)."""
        self._work.fire()  # local claimers need not wait for the round trip
        self._announce_again = True
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce(), name="cf-announce")

    async def _announce(self) -> None:
        """NOTIFY new work until no more arrived meanwhile (one in flight, the rest merged)."""
        while self._announce_again:
            self._announce_again = False
            try:
                await self._rows("announce_work", {"channel": f"cf_work.{self.schema}"})
            except QueueError as exc:
                log.warning("could not announce new work: %s", exc)
                return

    async def _listen(self) -> None:
        """Hold one LISTEN connection for the queue's life, reconnecting with backoff."""
        backoff = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, connect_timeout=int(self.connect_timeout), **self._connect_kwargs
                )
                async with conn:
                    for channel in self._channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if self._listening.is_set():  # a reconnect: we may have missed some
                        self._work.fire()
                        self._changes.fire_all()
                    self._listening.set()
                    backoff = 0.1
                    async for note in conn.notifies():
                        if self._channels.get(note.channel) == "work":
                            self._work.fire()
                        else:
                            self._changes.fire(note.payload)
            except psycopg.Error as exc:
                log.warning("queue LISTEN connection lost (%s); retrying in %.1fs", exc, backoff)
            self._work.fire()
            self._changes.fire_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
