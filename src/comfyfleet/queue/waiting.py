"""In-process wake-ups. Engines fire them (SQLite after its own commits, PostgreSQL from
LISTEN/NOTIFY), and `EventQueue` builds claim-with-wait, `wait_finished` and `watch` on them.

A waiter reads a `Wakeup`'s generation *before* looking at the database and waits only while it
is unchanged, so a fire between the look and the wait is never lost."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator, Collection, Iterator
from datetime import datetime

from comfyfleet.queue.base import Fit, Queue, Task


class Wakeup:
    """A generation counter whose changes can be awaited (must be used on the loop thread).
    ``latest`` is the task as the last change committed it when this process made that change
    (None after a change seen only as a notification): a waiter can use it without a read."""

    __slots__ = ("_event", "generation", "latest")

    def __init__(self) -> None:
        self.generation = 0
        self.latest: Task | None = None
        self._event = asyncio.Event()

    def fire(self, latest: Task | None = None) -> None:
        self.latest = latest
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, since: int, timeout: float | None) -> bool:
        """True once the generation differs from ``since``; False after ``timeout``."""
        if self.generation != since:
            return True
        event = self._event
        if timeout is not None and timeout <= 0:
            return False
        try:
            # not `wait_for`: on 3.11 it returns when the event fires as the waiter is
            # cancelled, swallowing the cancellation
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return self.generation != since
        return True


class ChangeHub:
    """One `Wakeup` per watched task id, alive while someone watches it."""

    def __init__(self) -> None:
        self._subs: dict[str, tuple[Wakeup, int]] = {}

    @contextlib.contextmanager
    def subscribe(self, task_id: str) -> Iterator[Wakeup]:
        wakeup, count = self._subs.get(task_id, (None, 0))
        wakeup = wakeup or Wakeup()
        self._subs[task_id] = (wakeup, count + 1)
        try:
            yield wakeup
        finally:
            wakeup, count = self._subs[task_id]
            if count == 1:
                del self._subs[task_id]
            else:
                self._subs[task_id] = (wakeup, count - 1)

    def fire(self, task_id: str, task: Task | None = None) -> None:
        """``task``: the task as this process's commit left it (saves the waiters a read)."""
        entry = self._subs.get(task_id)
        if entry:
            entry[0].fire(task)

    def fire_all(self) -> None:
        """After a lost connection: anything may have changed."""
        for wakeup, _ in builtins.list(self._subs.values()):
            wakeup.fire()


class EventQueue(Queue):
    """The waiting half of the contract, shared by the engines."""

    # A claim that found nothing although a due task exists skipped it because a row lock
    # was held (PostgreSQL's SKIP LOCKED: another claim, a watch, an admin's transaction).
    # Whoever holds it may never announce work, so look again after this backoff (seconds,
    # doubling) instead of sleeping through the whole ``wait``.
    locked_retry_first: float = 0.01
    locked_retry_max: float = 1.0

    def __init__(self) -> None:
        self._work = Wakeup()
        self._changes = ChangeHub()

    # engines implement these two -----------------------------------------------------------
    async def _claim_once(
        self,
        owner: str,
        lease_seconds: float,
        backend: str | None,
        targets: Collection[str] | None,
        fit: Fit | None = None,
    ) -> Task | None:
        raise NotImplementedError

    async def _next_run_at(
        self, targets: Collection[str] | None, fit: Fit | None = None
    ) -> datetime | None:
        """Earliest ``run_at`` of a queued task this claimer could take (due ones included:
        one that is due right after a claim found nothing was skipped, or has just come)."""
        raise NotImplementedError

    async def _watching(self, task_id: str) -> None:
        """Someone is about to wait for changes of this task (before its first look)."""

    # ------------------------------------------------------------------------------------------
    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        *,
        backend: str | None = None,
        targets: Collection[str] | None = None,
        wait: float = 0.0,
        fit: Fit | None = None,
    ) -> Task | None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait
        retry = self.locked_retry_first
        while True:
            seen = self._work.generation
            task = await self._claim_once(owner, lease_seconds, backend, targets, fit)
            remaining = give_up - loop.time()
            if task is not None or remaining <= 0:
                return task
            next_run = await self._next_run_at(targets, fit)
            if next_run is not None:
                due_in = (next_run - self.clock()).total_seconds()
                if due_in > 0:
                    remaining = min(remaining, due_in)
                else:  # due, yet not claimed: skipped while locked
                    remaining = min(remaining, retry)
                    retry = min(retry * 2, self.locked_retry_max)
            await self._work.wait(seen, remaining)

    async def wait_for_work(self, timeout: float) -> bool:
        return await self._work.wait(self._work.generation, timeout)

    async def wait_finished(
        self, task_id: str, timeout: float, *, current: Task | None = None
    ) -> Task:
        """Reads the task once (not even that when the caller has it as ``current``, e.g.
        just submitted), then only when a change was not made in this process: the commit
        that finishes it here hands the finished task straight to the waiter."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        with self._changes.subscribe(task_id) as changed:
            seen = changed.generation  # any change from here on wakes the loop below
            await self._watching(task_id)
            task = current if current is not None else await self.get(task_id)
            while True:
                remaining = give_up - loop.time()
                if task.finished or remaining <= 0:
                    if task.webhook_url and not task.deliveries:  # offered: none loaded
                        task = await self.get(task_id)
                    return task
                await changed.wait(seen, remaining)
                seen, offered = changed.generation, changed.latest
                task = offered if offered is not None else await self.get(task_id)

    async def watch(self, task_id: str, *, idle: float | None = None) -> AsyncIterator[Task]:
        """Like `wait_finished`, a change committed in this process is yielded as that commit
        left the task, without reading it back (a finished task with a webhook is read, for
        its deliveries)."""
        with self._changes.subscribe(task_id) as changed:
            seen = changed.generation
            await self._watching(task_id)
            task = await self.get(task_id)
            while True:
                yield task
                if task.finished:
                    return
                await changed.wait(seen, idle)
                offered = changed.latest if changed.generation != seen else None
                seen = changed.generation
                if offered is None or (offered.finished and offered.webhook_url):
                    task = await self.get(task_id)
                else:
                    task = offered
