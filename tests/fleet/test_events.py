"""The in-process task events bus."""

from __future__ import annotations

import asyncio

from comfyfleet.fleet.events import TaskEvents


async def test_subscriber_gets_events_published_after_subscribe_and_ends_on_final() -> None:
    bus = TaskEvents()
    sub = bus.subscribe("t1")
    bus.publish("t1", {"type": "status", "status": "running"})
    bus.publish("t2", {"type": "progress", "percent": 1})  # another task: not ours
    bus.publish("t1", {"type": "progress", "percent": 50})
    bus.publish("t1", {"type": "status", "status": "succeeded"})
    bus.publish("t1", {"type": "progress", "percent": 99})  # after the end: not delivered
    got = [event async for event in sub]
    assert got == [
        {"type": "status", "status": "running"},
        {"type": "progress", "percent": 50},
        {"type": "status", "status": "succeeded"},
    ]
    assert bus.subscribers("t1") == 0


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    bus = TaskEvents()
    sub = bus.subscribe("t")
    waiter = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    assert not waiter.done()
    bus.publish("t", {"type": "progress", "percent": 1})
    assert await waiter == {"type": "progress", "percent": 1}
    sub.close()


async def test_slow_subscriber_drops_oldest_progress_never_status() -> None:
    bus = TaskEvents(maxlen=3)
    async with bus.subscribe("t") as sub:
        bus.publish("t", {"type": "status", "status": "running"})
        for i in range(10):
            bus.publish("t", {"type": "progress", "percent": i})
        bus.publish("t", {"type": "status", "status": "failed"})
        got = [event async for event in sub]
    assert got[0] == {"type": "status", "status": "running"}
    assert got[-1] == {"type": "status", "status": "failed"}
    assert [e["percent"] for e in got if e["type"] == "progress"] == [9]


async def test_close_ends_iteration_and_unregisters() -> None:
    bus = TaskEvents()
    sub = bus.subscribe("t")
    other = bus.subscribe("t")
    waiter = asyncio.create_task(anext(sub, None))
    await asyncio.sleep(0)
    sub.close()
    assert await waiter is None
    assert bus.subscribers("t") == 1
    other.close()
    assert bus.subscribers("t") == 0
