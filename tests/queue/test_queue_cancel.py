"""Cancelling a waiting claim is safe: a claim that commits anyway is handed back (queued, the
attempt uncounted), not left running until its lease expires; a cancel is never swallowed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.queue import Task
from comfyfleet.queue.postgres import PostgresQueue
from comfyfleet.queue.sqlite import SqliteQueue
from comfyfleet.queue.testing import FakeClock
from comfyfleet.queue.waiting import Wakeup


def assert_handed_back(task: Task) -> None:
    assert (task.status, task.attempts, task.lease_owner) == ("queued", 0, None)
    assert task.lease_expires_at is None and task.started_at is None and task.backend is None


async def test_a_cancel_racing_a_wakeup_is_not_swallowed() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait(wakeup.generation, 60))
    for _ in range(100):  # loop turns, not time: until the waiter blocks on the event
        if wakeup._event._waiters:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0)
    assert wakeup._event._waiters  # type: ignore[attr-defined]
    wakeup.fire()  # the wake-up and the cancel land in the same loop turn
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_a_claim_the_sqlite_thread_commits_after_the_cancel_is_handed_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    queue = SqliteQueue(tmp_path / "q.db", clock=clock)
    await queue.open()
    gate = threading.Event()
    try:
        task, _ = await queue.submit({})
        thread = queue._thread
        assert thread is not None
        blocker = thread.call(lambda _: gate.wait(), alone=True)  # holds the engine thread
        queued = asyncio.Event()
        call = thread.call

        def spy(fn: Any, **options: Any) -> asyncio.Future[Any]:
            future = call(fn, **options)
            queued.set()
            return future

        thread.call = spy  # type: ignore[method-assign]
        claimer = asyncio.create_task(queue.claim("agent", 30, backend="b1", wait=60))
        await asyncio.wait_for(queued.wait(), 10)  # the claim waits behind the blocker
        del thread.call
        claimer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claimer
        gate.set()  # only now does the thread run the claim, and commit it
        await blocker
    finally:
        gate.set()
        await queue.close()  # waits for hand-backs
    async with SqliteQueue(tmp_path / "q.db", clock=clock) as reopened:
        assert_handed_back(await reopened.get(task.id))
        again = await reopened.claim("agent", 30)
        assert again is not None and again.id == task.id and again.attempts == 1


@pytest.mark.postgres
async def test_a_claim_answered_after_the_cancel_is_handed_back_on_postgres(
    make_pg: Callable[..., PostgresQueue],
) -> None:
    queue, other = make_pg(), make_pg()
    await queue.open()
    await other.open()
    try:
        task, _ = await queue.submit({})
        committed, deliver = asyncio.Event(), asyncio.Event()
        rows = queue._rows

        async def answer_late(query: str, params: dict[str, Any]) -> Any:
            """The claim commits, but its answer is still on the way when the cancel lands."""
            result = await rows(query, params)
            if query == "claim":
                committed.set()
                await deliver.wait()
            return result

        queue._rows = answer_late  # type: ignore[method-assign]
        claimer = asyncio.create_task(queue.claim("agent-a", 30, backend="b1", wait=60))
        await asyncio.wait_for(committed.wait(), 10)
        claimer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claimer  # at once: the cancel does not wait for the answer
        deliver.set()
        await queue.close()  # waits for hand-backs
        assert_handed_back(await other.get(task.id))
        again = await other.claim("agent-b", 30)
        assert again is not None and again.id == task.id and again.attempts == 1
    finally:
        await queue.close()
        await other.close()
