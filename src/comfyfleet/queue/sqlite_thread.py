"""The SQLite engine's one thread. Calls queue up from the event loop; the thread runs
whatever is waiting as one ``BEGIN IMMEDIATE`` transaction (group commit), each call inside
its own savepoint so a failing call undoes only itself, and answers every caller after
COMMIT. Under concurrency that turns N commits and N thread hops into one.

A call marked ``inline`` (a point statement: insert, claim, complete, get...) runs on the
caller's loop at once when the thread is idle and nothing waits for it: such a transaction
takes ~15 µs in WAL mode, the hop to the thread and back ~250 µs. Inline never waits for a
lock another process holds (busy timeout 0 for it); then the call goes to the thread like any
other. Checkpoints run on the thread (automatic checkpoints are off on the connection), so a
commit on the loop never writes the database file back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Call = Callable[[sqlite3.Connection | None], Any]


@dataclass(slots=True)
class _Job:
    fn: Call
    alone: bool  # runs outside any batch transaction (connect, migrations, close)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    orphaned: Callable[[Any], None] | None  # gets the result if the caller gave up meanwhile


_STOP = object()


class SqliteThread:
    def __init__(
        self,
        name: str = "comfyfleet-sqlite",
        max_batch: int = 64,
        *,
        inline: bool = True,
        checkpoint_every: int = 200,
    ) -> None:
        self.conn: sqlite3.Connection | None = None
        self.max_batch = max_batch
        self.inline = inline
        self.busy_timeout_ms = 0  # the connection's own (set by whoever connects)
        self.checkpoint_every = checkpoint_every
        self.inlined = 0  # calls answered on the loop (for tests and curiosity)
        self._since_checkpoint = 0
        self._jobs: collections.deque[Any] = collections.deque()
        self._ready = threading.Condition()
        # Held while the connection is in use: by the thread from taking a batch until its
        # COMMIT, by an inline call for its transaction.
        self._using = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def call(
        self,
        fn: Call,
        *,
        alone: bool = False,
        orphaned: Callable[[Any], None] | None = None,
        inline: bool = False,
    ) -> asyncio.Future[Any]:
        """Schedule ``fn(conn)``; the future resolves after its transaction committed. The call
        runs even if the future is cancelled first; then its result goes to ``orphaned``.
        ``inline``: ``fn`` is quick; run it now on this loop if the thread is idle (the future
        is then done on return)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not alone:
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.checkpoint_every and self.conn is not None:
                self._since_checkpoint = 0
                done = self.call(_checkpoint, alone=True)  # a failure shows at the next one
                done.add_done_callback(lambda f: f.cancelled() or f.exception())
            if inline and self.inline and self._inline(fn, future):
                return future
        with self._ready:
            self._jobs.append(_Job(fn, alone, loop, future, orphaned))
            self._ready.notify()
        return future

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocking)."""
        with self._ready:
            self._jobs.append(_STOP)
            self._ready.notify()
        self._thread.join()

    def _main(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is _STOP:
                self._using.release()
                return
            try:
                if batch[0].alone:
                    outcomes = [_outcome(batch[0].fn, self.conn)]
                else:
                    outcomes = self._transaction(batch)
            finally:
                self._using.release()
            _deliver(batch, outcomes)

    def _inline(self, fn: Call, future: asyncio.Future[Any]) -> bool:
        """Run ``fn`` in its own transaction on the calling thread if the connection is free
        and no call waits before it (their order is kept); False: not run, queue it."""
        conn = self.conn
        if conn is None or not self._using.acquire(blocking=False):
            return False
        try:
            if self._jobs:
                return False
            try:
                conn.execute("PRAGMA busy_timeout=0")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            except sqlite3.OperationalError:  # another process writes: wait on the thread
                return False
            try:
                value = fn(conn)
                conn.execute("COMMIT")
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                future.set_exception(exc)
            else:
                future.set_result(value)
            self.inlined += 1
            return True
        finally:
            self._using.release()

    def _next_batch(self) -> Any:
        with self._ready:
            while not self._jobs:
                self._ready.wait()
            self._using.acquire()  # (released in _main once the batch is done)
            first = self._jobs.popleft()
            if first is _STOP or first.alone:
                return first if first is _STOP else [first]
            batch = [first]
            while self._jobs and len(batch) < self.max_batch:
                head = self._jobs[0]
                if head is _STOP or head.alone:
                    break
                batch.append(self._jobs.popleft())
            return batch

    def _transaction(self, batch: list[_Job]) -> list[tuple[bool, Any]]:
        conn = self.conn
        if conn is None:
            return [(False, sqlite3.ProgrammingError("not connected"))] * len(batch)
        single = len(batch) == 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            if single:
                outcomes = [(True, batch[0].fn(conn))]
            else:
                outcomes = [self._savepoint(conn, job.fn) for job in batch]
            conn.execute("COMMIT")
        except Exception as exc:  # BEGIN or COMMIT failed, or the single call: nothing stays
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(False, exc)] * len(batch)
        return outcomes

    @staticmethod
    def _savepoint(conn: sqlite3.Connection, fn: Call) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT call")
        try:
            value = fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO call")
            conn.execute("RELEASE call")
            return False, exc
        conn.execute("RELEASE call")
        return True, value


def _checkpoint(conn: sqlite3.Connection | None) -> None:
    """Write the WAL back into the database file, not waiting for readers (PASSIVE)."""
    if conn is not None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _outcome(fn: Call, conn: sqlite3.Connection | None) -> tuple[bool, Any]:
    try:
        return True, fn(conn)
    except Exception as exc:
        return False, exc


def _deliver(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
    """Resolve the futures on their loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, tuple[bool, Any]]]] = {}
    for job, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(job.loop, []).append((job, outcome))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[_Job, tuple[bool, Any]]]) -> None:
    for job, (ok, value) in pairs:
        if job.future.done():  # the caller gave up (cancelled), yet the call committed
            if ok and job.orphaned is not None:
                job.orphaned(value)
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
