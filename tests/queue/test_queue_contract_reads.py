"""The queue contract, part two: the webhook outbox, the read side (stats, position, list,
purge) and event-driven waiting; run on every engine through the ``queue`` fixture."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from comfyfleet.errors import Conflict, InvalidRequest, NotFound
from comfyfleet.queue import Queue
from comfyfleet.queue.testing import FakeClock, spy_after_get, spy_before_wait

LEASE = 30.0


async def test_outbox_is_written_with_the_finish(queue: Queue, clock: FakeClock) -> None:
    hooked, _ = await queue.submit({}, webhook_url="https://hooks.example/done", max_attempts=2)
    await queue.submit({})  # no webhook: no delivery
    task = await queue.claim("agent", LEASE)
    assert task is not None and task.id == hooked.id
    await queue.fail(task.id, "agent", {"code": "retry me"}, retryable=True)
    assert (await queue.get(task.id)).deliveries == ()  # a requeue is not a finish
    task = await queue.claim("agent", LEASE)
    other = await queue.claim("agent", LEASE)
    assert task is not None and other is not None
    with pytest.raises(Conflict):
        await queue.complete(task.id, "intruder", {"x": 1})
    assert (await queue.get(task.id)).deliveries == ()  # a refused finish writes nothing
    await queue.complete(task.id, "agent", {"images": ["a.png"]})
    await queue.complete(other.id, "agent", {})
    [delivery] = (await queue.get(task.id)).deliveries
    assert delivery.task_id == task.id and delivery.url == "https://hooks.example/done"
    assert delivery.body["status"] == "succeeded" and delivery.body["id"] == task.id
    assert delivery.body["result"] == {"images": ["a.png"]} and delivery.body["attempts"] == 2
    assert delivery.delivered_at is None and delivery.attempts == 0
    assert (await queue.get(other.id)).deliveries == ()


async def test_outbox_delivery_lifecycle(queue: Queue, clock: FakeClock) -> None:
    task, _ = await queue.submit({}, webhook_url="https://hooks.example/c")
    await queue.cancel(task.id)
    [due] = await queue.due_webhooks(limit=10, lease_seconds=30)
    assert due.body["status"] == "cancelled" and due.attempts == 1
    assert await queue.due_webhooks() == []  # leased to us for 30 s
    await queue.webhook_failed(due.id, "HTTP 502", clock.now + timedelta(seconds=5))
    assert await queue.due_webhooks() == []
    clock.advance(5)
    [again] = await queue.due_webhooks()
    assert again.id == due.id and again.attempts == 2 and again.last_error == "HTTP 502"
    await queue.webhook_delivered(due.id)
    clock.advance(3600)
    assert await queue.due_webhooks() == []
    [delivered] = (await queue.get(task.id)).deliveries
    assert delivered.delivered_at is not None and delivered.last_error is None
    with pytest.raises(NotFound):
        await queue.webhook_failed(due.id, "late", None)


async def test_outbox_gives_up(queue: Queue, clock: FakeClock) -> None:
    task, _ = await queue.submit({}, webhook_url="https://hooks.example/c")
    await queue.cancel(task.id)
    [due] = await queue.due_webhooks()
    await queue.webhook_failed(due.id, "HTTP 410", None)
    clock.advance(3600)
    assert await queue.due_webhooks() == []
    [kept] = (await queue.get(task.id)).deliveries
    assert kept.next_attempt_at is None and kept.delivered_at is None


async def test_stats(queue: Queue, clock: FakeClock) -> None:
    await queue.submit({}, priority=1)
    clock.advance(10)
    for priority in (1, 2, 2):
        await queue.submit({}, priority=priority)
    running = await queue.claim("agent", LEASE)
    assert running is not None
    done, _ = await queue.submit({})
    await queue.cancel(done.id)
    clock.advance(5)
    stats = await queue.stats()
    assert stats.counts == {"queued": 3, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert stats.depth_by_priority == {1: 2, 2: 1}
    assert stats.oldest_queued_age == pytest.approx(15)


async def test_position(queue: Queue) -> None:
    low, _ = await queue.submit({}, priority=0)
    high, _ = await queue.submit({}, priority=5)
    low2, _ = await queue.submit({}, priority=0)
    assert [await queue.position(t.id) for t in (high, low, low2)] == [1, 2, 3]
    await queue.claim("agent", LEASE)
    assert await queue.position(high.id) is None
    assert await queue.position(low2.id) == 2
    with pytest.raises(NotFound):
        await queue.position("missing")


async def test_list_filters_and_pages(queue: Queue, clock: FakeClock) -> None:
    start = clock.now
    ids = []
    for n in range(7):
        clock.advance(1)
        ids.append((await queue.submit({"n": n}, priority=n % 2))[0].id)
    await queue.cancel(ids[0])
    newest_first = list(reversed(ids))
    page = await queue.list(limit=3)
    assert [t.id for t in page.items] == newest_first[:3] and page.next_cursor
    page2 = await queue.list(limit=3, cursor=page.next_cursor)
    page3 = await queue.list(limit=3, cursor=page2.next_cursor)
    assert [t.id for t in page2.items + page3.items] == newest_first[3:]
    assert page3.next_cursor is None
    assert [t.id for t in (await queue.list(status="cancelled")).items] == [ids[0]]
    odd = await queue.list(priority=1)
    assert [t.id for t in odd.items] == [ids[5], ids[3], ids[1]]
    window = await queue.list(
        created_after=start + timedelta(seconds=2), created_before=start + timedelta(seconds=5)
    )
    assert [t.id for t in window.items] == [ids[3], ids[2]]
    with pytest.raises(InvalidRequest):
        await queue.list(cursor="not-a-cursor")


async def test_purge_frees_idempotency_keys(queue: Queue, clock: FakeClock) -> None:
    old, _ = await queue.submit({}, idempotency_key="k", webhook_url="https://hooks.example")
    await queue.cancel(old.id)
    keep, _ = await queue.submit({})
    clock.advance(60)
    assert await queue.purge(clock.now - timedelta(seconds=30)) == 1
    with pytest.raises(NotFound):
        await queue.get(old.id)
    assert await queue.due_webhooks() == []
    fresh, created = await queue.submit({}, idempotency_key="k")
    assert created and fresh.id != old.id
    assert (await queue.get(keep.id)).status == "queued"


async def test_a_waiting_claimer_is_woken_by_submit(queue: Queue) -> None:
    waiting = spy_before_wait(queue)
    claimer = asyncio.create_task(queue.claim("agent", LEASE, wait=60))
    await asyncio.wait_for(waiting.wait(), 10)
    assert not claimer.done()
    task, _ = await queue.submit({"wake": True})
    claimed = await asyncio.wait_for(claimer, 10)  # far below the 60 s it would wait
    assert claimed is not None and claimed.id == task.id


async def test_claim_wait_gives_up_with_none(queue: Queue) -> None:
    assert await queue.claim("agent", LEASE, wait=0.05) is None


async def test_wait_finished_wakes_on_completion(queue: Queue) -> None:
    task, _ = await queue.submit({})
    looked = spy_after_get(queue)
    waiter = asyncio.create_task(queue.wait_finished(task.id, 60))
    await asyncio.wait_for(looked.wait(), 10)
    claimed = await queue.claim("agent", LEASE)
    assert claimed is not None
    await queue.complete(task.id, "agent", {"ok": 1})
    finished = await asyncio.wait_for(waiter, 10)
    assert finished.status == "succeeded" and finished.result == {"ok": 1}


async def test_wait_finished_returns_the_task_on_timeout(queue: Queue) -> None:
    task, _ = await queue.submit({})
    assert (await queue.wait_finished(task.id, 0.05)).status == "queued"
    with pytest.raises(NotFound):
        await queue.wait_finished("missing", 0.05)


async def test_watch_follows_status_and_progress(queue: Queue) -> None:
    task, _ = await queue.submit({})
    updates = queue.watch(task.id)

    async def next_update():
        return await asyncio.wait_for(anext(updates), 10)

    assert (await next_update()).status == "queued"
    await queue.claim("agent", LEASE)
    assert (await next_update()).status == "running"
    await queue.heartbeat(task.id, "agent", LEASE, {"value": 1, "max": 2})
    assert (await next_update()).progress == {"value": 1, "max": 2}
    await queue.complete(task.id, "agent", {})
    assert (await next_update()).status == "succeeded"
    with pytest.raises(StopAsyncIteration):
        await next_update()
