"""The queue contract, part one: submitting, claiming, leases, retries, deadlines and cancel;
run on every engine through the ``queue`` fixture."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from comfyfleet.errors import Conflict, InvalidRequest, NotFound
from comfyfleet.queue import Queue
from comfyfleet.queue.testing import FakeClock

LEASE = 30.0


async def claim_ids(queue: Queue, owner: str = "agent") -> list[str]:
    """Claim until empty; the ids in claim order."""
    ids = []
    while (task := await queue.claim(owner, LEASE)) is not None:
        ids.append(task.id)
    return ids


async def test_migrate_is_idempotent(queue: Queue) -> None:
    assert await queue.migrate() == []


async def test_submit_records_the_task(queue: Queue, clock: FakeClock) -> None:
    task, created = await queue.submit(
        {"workflow": {"1": {}}},
        priority=3,
        max_attempts=5,
        timeout_seconds=60,
        webhook_url="https://hooks.example/x",
        target="gpu-a",
    )
    assert created
    assert (task.status, task.priority, task.attempts, task.max_attempts) == ("queued", 3, 0, 5)
    assert task.payload == {"workflow": {"1": {}}}
    assert task.created_at == clock.now == task.run_at
    assert task.timeout_seconds == 60 and task.deadline_at is None
    assert task.webhook_url == "https://hooks.example/x" and task.target == "gpu-a"
    assert await queue.get(task.id) == task


async def test_priority_first_then_fifo(queue: Queue) -> None:
    order = [0, 5, 0, 5, 1, -2, 1]
    ids = [(await queue.submit({"n": n}, priority=p))[0].id for n, p in enumerate(order)]
    expected = [ids[i] for i in sorted(range(len(order)), key=lambda i: (-order[i], i))]
    assert await claim_ids(queue) == expected


async def test_idempotency_key_returns_the_existing_task(queue: Queue) -> None:
    first, created = await queue.submit({"v": 1}, idempotency_key="order-42")
    again, created_again = await queue.submit({"v": 2}, idempotency_key="order-42", priority=9)
    assert created and not created_again
    assert again.id == first.id and again.payload == {"v": 1}
    other, created_other = await queue.submit({"v": 3}, idempotency_key="order-43")
    assert created_other and other.id != first.id


async def test_explicit_task_id_must_be_new(queue: Queue) -> None:
    await queue.submit({}, task_id="job-1")
    with pytest.raises(Conflict):
        await queue.submit({}, task_id="job-1")


async def test_claim_marks_running_with_lease_and_deadline(queue: Queue, clock: FakeClock) -> None:
    submitted, _ = await queue.submit({}, timeout_seconds=120)
    task = await queue.claim("agent-1", 30, backend="http://comfy-1:8188")
    assert task is not None and task.id == submitted.id
    assert (task.status, task.attempts, task.lease_owner) == ("running", 1, "agent-1")
    assert task.backend == "http://comfy-1:8188"
    assert task.started_at == clock.now
    assert task.lease_expires_at == clock.now + timedelta(seconds=30)
    assert task.deadline_at == clock.now + timedelta(seconds=120)
    assert await queue.claim("agent-2", 30) is None


async def test_run_at_in_the_future_is_not_claimable_yet(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({}, run_at=clock.now + timedelta(seconds=60))
    assert await queue.claim("agent", LEASE) is None
    clock.advance(60)
    assert await queue.claim("agent", LEASE) is not None


async def test_targets_filter_claims(queue: Queue) -> None:
    only_a, _ = await queue.submit({}, target="gpu-a", priority=1)
    anyone, _ = await queue.submit({})
    task = await queue.claim("b", LEASE, targets=["gpu-b"])
    assert task is not None and task.id == anyone.id
    assert await queue.claim("b", LEASE, targets=["gpu-b"]) is None
    task = await queue.claim("a", LEASE, targets=["gpu-a", "gpu-c"])
    assert task is not None and task.id == only_a.id


async def test_retry_with_backoff_respects_run_at(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({}, max_attempts=3)
    task = await queue.claim("agent", LEASE)
    assert task is not None
    failed = await queue.fail(
        task.id, "agent", {"code": "comfy_unavailable"}, retryable=True, backoff_seconds=10
    )
    assert failed.status == "queued" and failed.lease_owner is None
    assert failed.run_at == clock.now + timedelta(seconds=10)
    assert failed.error == {"code": "comfy_unavailable"} and failed.finished_at is None
    assert await queue.claim("agent", LEASE) is None
    clock.advance(10)
    again = await queue.claim("agent", LEASE)
    assert again is not None and again.id == task.id and again.attempts == 2


async def test_max_attempts_exhaustion_fails(queue: Queue) -> None:
    await queue.submit({}, max_attempts=2)
    for attempt in (1, 2):
        task = await queue.claim("agent", LEASE)
        assert task is not None and task.attempts == attempt
        final = await queue.fail(task.id, "agent", {"code": "x", "n": attempt}, retryable=True)
    assert final.status == "failed" and final.attempts == 2
    assert final.error == {"code": "x", "n": 2} and final.finished_at is not None
    assert await queue.claim("agent", LEASE) is None


async def test_non_retryable_failure_is_final(queue: Queue) -> None:
    await queue.submit({}, max_attempts=5)
    task = await queue.claim("agent", LEASE)
    assert task is not None
    failed = await queue.fail(task.id, "agent", {"code": "node_execution_error"})
    assert failed.status == "failed" and failed.attempts == 1


async def test_expired_lease_requeues_and_old_owner_is_refused(
    queue: Queue, clock: FakeClock
) -> None:
    await queue.submit({}, max_attempts=3)
    task = await queue.claim("crashed", 5)
    assert task is not None
    assert await queue.expire_leases() == []
    clock.advance(6)
    [expired] = await queue.expire_leases()
    assert expired.id == task.id and expired.status == "queued"
    assert expired.error is not None and expired.error["code"] == "lease_expired"
    retaken = await queue.claim("healthy", LEASE)
    assert retaken is not None and retaken.id == task.id and retaken.attempts == 2
    answer = await queue.heartbeat(task.id, "crashed", LEASE, {"step": 9})
    assert answer.lease_lost and answer.lease_expires_at is None
    with pytest.raises(Conflict):
        await queue.complete(task.id, "crashed", {"stale": True})
    with pytest.raises(Conflict):
        await queue.fail(task.id, "crashed", {"code": "stale"})
    current = await queue.get(task.id)
    assert (current.status, current.lease_owner, current.result) == ("running", "healthy", None)
    assert current.progress is None
    done = await queue.complete(task.id, "healthy", {"ok": True})
    assert done.status == "succeeded" and done.result == {"ok": True}


async def test_expired_lease_on_last_attempt_fails(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({}, max_attempts=1)
    task = await queue.claim("crashed", 5)
    assert task is not None
    clock.advance(5)
    [expired] = await queue.expire_leases()
    assert expired.status == "failed" and expired.error["code"] == "lease_expired"


async def test_heartbeat_extends_lease_and_records_progress(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({})
    task = await queue.claim("agent", 10)
    assert task is not None
    clock.advance(8)
    answer = await queue.heartbeat(task.id, "agent", 10, {"node": "3", "value": 4, "max": 20})
    assert not answer.lease_lost and not answer.cancel_requested
    assert answer.lease_expires_at == clock.now + timedelta(seconds=10)
    clock.advance(8)
    assert await queue.expire_leases() == []
    await queue.heartbeat(task.id, "agent", 10)  # no progress: the last one stays
    assert (await queue.get(task.id)).progress == {"node": "3", "value": 4, "max": 20}
    with pytest.raises(NotFound):
        await queue.heartbeat("nope", "agent", 10)


async def test_deadline_expiry_fails_with_timeout(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({}, timeout_seconds=25, max_attempts=3)
    task = await queue.claim("agent", 10)
    assert task is not None
    for _ in range(2):
        clock.advance(9)
        await queue.heartbeat(task.id, "agent", 10)
        assert await queue.expire_leases() == []
    clock.advance(9)  # 27 s after the claim; the lease is still fresh
    await queue.heartbeat(task.id, "agent", 10)
    [expired] = await queue.expire_leases()
    assert expired.status == "failed" and expired.error["code"] == "timeout"
    assert await queue.claim("agent", 10) is None


async def test_cancel_queued_task_never_runs(queue: Queue) -> None:
    task, _ = await queue.submit({})
    cancelled = await queue.cancel(task.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert await queue.claim("agent", LEASE) is None


async def test_cancel_running_task_is_requested_then_reported(queue: Queue) -> None:
    await queue.submit({}, max_attempts=3)
    task = await queue.claim("agent", LEASE)
    assert task is not None
    requested = await queue.cancel(task.id)
    assert requested.status == "running" and requested.cancel_requested
    answer = await queue.heartbeat(task.id, "agent", LEASE)
    assert answer.cancel_requested and not answer.lease_lost
    stopped = await queue.fail(task.id, "agent", {"code": "interrupted"}, retryable=True)
    assert stopped.status == "cancelled" and stopped.error == {"code": "interrupted"}


async def test_cancel_running_task_whose_agent_vanished(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({}, max_attempts=3)
    task = await queue.claim("agent", 5)
    assert task is not None
    await queue.cancel(task.id)
    clock.advance(5)
    [expired] = await queue.expire_leases()
    assert expired.status == "cancelled"


async def test_cancel_finished_or_unknown_task_is_refused(queue: Queue) -> None:
    await queue.submit({})
    task = await queue.claim("agent", LEASE)
    assert task is not None
    await queue.complete(task.id, "agent", {})
    with pytest.raises(Conflict):
        await queue.cancel(task.id)
    with pytest.raises(NotFound):
        await queue.cancel("missing")
    with pytest.raises(NotFound):
        await queue.get("missing")


async def test_only_the_lease_holder_may_finish(queue: Queue) -> None:
    await queue.submit({})
    task = await queue.claim("agent-a", LEASE)
    assert task is not None
    with pytest.raises(Conflict):
        await queue.complete(task.id, "agent-b", {"mine": True})
    assert (await queue.heartbeat(task.id, "agent-b", LEASE)).lease_lost
    assert (await queue.get(task.id)).status == "running"
    with pytest.raises(NotFound):
        await queue.complete("missing", "agent-a", {})


async def test_invalid_submissions_are_refused(queue: Queue) -> None:
    with pytest.raises(InvalidRequest):
        await queue.submit({}, run_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidRequest):
        await queue.list(created_after=datetime(2030, 1, 1))
    with pytest.raises(InvalidRequest):
        await queue.submit({}, max_attempts=0)
    with pytest.raises(InvalidRequest):
        await queue.submit({}, timeout_seconds=0)
