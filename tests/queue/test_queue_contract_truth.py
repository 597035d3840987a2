"""The queue contract, part three: what a task says about itself is true — a finished task's
progress matches its status, and an idempotency key answers only for the request it was
first used for; run on every engine through the ``queue`` fixture."""

from __future__ import annotations

import pytest

from comfyfleet.errors import Conflict
from comfyfleet.queue import Queue
from comfyfleet.queue.testing import FakeClock

LEASE = 30.0
MIDWAY = {"stage": "running", "node": "3", "value": 6, "max": 10, "percent": 60.0}


async def running_with_progress(queue: Queue, **submit: object) -> str:
    """A claimed task whose last heartbeat said it was 60 % through node 3."""
    await queue.submit({}, **submit)  # type: ignore[arg-type]
    task = await queue.claim("agent", LEASE)
    assert task is not None
    await queue.heartbeat(task.id, "agent", LEASE, MIDWAY)
    assert (await queue.get(task.id)).progress == MIDWAY
    return task.id


async def test_a_succeeded_task_reads_done_at_100_percent(queue: Queue) -> None:
    task_id = await running_with_progress(queue)
    done = await queue.complete(task_id, "agent", {"ok": True})
    assert done.status == "succeeded"
    assert done.progress == {"stage": "done", "percent": 100.0}
    assert (await queue.get(task_id)).progress == done.progress


async def test_a_failed_task_keeps_the_stage_it_died_in(queue: Queue) -> None:
    task_id = await running_with_progress(queue, max_attempts=1)
    failed = await queue.fail(task_id, "agent", {"code": "node_execution_error"})
    assert failed.status == "failed" and failed.progress == MIDWAY


async def test_a_failure_may_carry_the_agents_last_progress(queue: Queue) -> None:
    """Heartbeats are rate-limited; the agent's final word beats the last heartbeat's."""
    task_id = await running_with_progress(queue, max_attempts=1)
    later = {**MIDWAY, "value": 9, "percent": 90.0}
    failed = await queue.fail(task_id, "agent", {"code": "x"}, progress=later)
    assert failed.status == "failed" and failed.progress == later


async def test_a_cancelled_running_task_keeps_where_it_stopped(queue: Queue) -> None:
    task_id = await running_with_progress(queue)
    await queue.cancel(task_id)
    stopped = await queue.fail(task_id, "agent", {"code": "interrupted"}, retryable=True)
    assert stopped.status == "cancelled" and stopped.progress == MIDWAY


async def test_a_requeued_task_forgets_the_failed_attempts_progress(queue: Queue) -> None:
    task_id = await running_with_progress(queue, max_attempts=3)
    requeued = await queue.fail(task_id, "agent", {"code": "comfy_unavailable"}, retryable=True)
    assert requeued.status == "queued" and requeued.progress is None


async def test_an_expired_lease_requeues_without_progress_or_fails_with_it(
    queue: Queue, clock: FakeClock
) -> None:
    retried = await running_with_progress(queue, max_attempts=2)
    clock.advance(LEASE)
    [requeued] = await queue.expire_leases()
    assert requeued.id == retried and requeued.status == "queued"
    assert requeued.progress is None
    task = await queue.claim("agent", LEASE)
    assert task is not None and task.id == retried
    await queue.heartbeat(task.id, "agent", LEASE, MIDWAY)
    clock.advance(LEASE)
    [failed] = await queue.expire_leases()
    assert failed.status == "failed" and failed.progress == MIDWAY


async def test_a_key_reused_for_the_same_request_returns_the_task(queue: Queue) -> None:
    first, created = await queue.submit({"v": 1}, idempotency_key="k", fingerprint="f1")
    again, created_again = await queue.submit({"v": 1}, idempotency_key="k", fingerprint="f1")
    assert created and not created_again and again.id == first.id


async def test_a_key_reused_for_another_request_is_a_conflict(queue: Queue) -> None:
    first, _ = await queue.submit({"v": 1}, idempotency_key="k", fingerprint="f1")
    with pytest.raises(Conflict) as raised:
        await queue.submit({"v": 2}, idempotency_key="k", fingerprint="f2")
    assert "was already used for another request" in raised.value.message
    assert raised.value.details == {"idempotency_key": "k", "task_id": first.id}
    page = await queue.list()
    assert [task.id for task in page.items] == [first.id]  # nothing else was written


async def test_a_key_without_fingerprints_is_not_compared(queue: Queue) -> None:
    """Rows from before fingerprints (and callers without them) keep the old answer."""
    first, _ = await queue.submit({"v": 1}, idempotency_key="old")
    again, created = await queue.submit({"v": 2}, idempotency_key="old", fingerprint="f2")
    assert not created and again.id == first.id
    keyed, _ = await queue.submit({"v": 1}, idempotency_key="new", fingerprint="f1")
    replay, created = await queue.submit({"v": 2}, idempotency_key="new")
    assert not created and replay.id == keyed.id
