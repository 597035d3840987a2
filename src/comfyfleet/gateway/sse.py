"""A task's life as server-sent events: ``queued``, ``started``, ``progress``, ``artifacts``,
``finished``.

Two sources are merged. The queue's ``watch`` is the truth for statuses and sees every replica's
changes; the fleet's in-process `TaskEvents` bus adds every progress step the local agents see
(the queue only records progress at heartbeat rate). A stream first replays the task's current
state as the same events a live watcher would have seen, then follows it, and ends after
``finished``. Events always come in life order: progress that arrives before the queue reports
the start is held until ``started`` has been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from comfyfleet.fleet.events import TaskEvents
from comfyfleet.queue import Queue, Task

Event = tuple[str, dict[str, Any]]
Present = Callable[[Task], dict[str, Any]]


class Tracker:
    """Turns task snapshots and bus events into the SSE event sequence (no I/O)."""

    def __init__(self, present: Present) -> None:
        self.present = present
        self.status: str | None = None
        self.attempts = 0
        self.progress: dict[str, Any] | None = None
        self.held: dict[str, Any] | None = None  # bus progress before ``started``
        self.done = False

    def snapshot(self, task: Task) -> list[Event]:
        if self.done:
            return []
        events: list[Event] = []
        base = {"task_id": task.id, "attempts": task.attempts}
        if self.status is None:
            events.append(("queued", {**base, "status": "queued", "at": _iso(task.created_at)}))
            self.status = "queued"
        # A new attempt (retry after a failure or a lost lease) restarts the life.
        if self.status == "running" and (task.status == "queued" or task.attempts > self.attempts):
            events.append(
                ("queued", {**base, "status": "queued", "retry": True, "error": task.error})
            )
            self.status, self.progress = "queued", None
        if task.status != "queued" and task.started_at and self.status == "queued":
            events.append(
                (
                    "started",
                    {
                        **base,
                        "status": "running",
                        "backend": task.backend,
                        "at": _iso(task.started_at),
                    },
                )
            )
            self.status, self.attempts = "running", task.attempts
            if self.held is not None:
                events += self._progress(self.held)
                self.held = None
        if task.status == "running" and task.progress:
            events += self._progress(task.progress)
        if task.finished:
            present = self.present(task)
            artifacts = (present.get("result") or {}).get("artifacts")
            if artifacts:
                events.append(("artifacts", {**base, "artifacts": artifacts}))
            events.append(("finished", present))
            self.status, self.done = task.status, True
        return events

    def bus(self, event: dict[str, Any]) -> list[Event]:
        if self.done or event.get("type") != "progress":
            return []
        progress = {k: v for k, v in event.items() if k != "type"}
        if self.status != "running":
            self.held = progress
            return []
        return self._progress(progress)

    def _progress(self, progress: dict[str, Any]) -> list[Event]:
        if progress == self.progress:
            return []
        self.progress = progress
        return [("progress", dict(progress))]


async def task_events(
    queue: Queue, bus: TaskEvents | None, task_id: str, present: Present
) -> AsyncIterator[Event]:
    """The merged event stream of one task; ends after ``finished``."""
    merged: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    # Subscribe to the bus before the first snapshot so no step falls between the two.
    subscription = bus.subscribe(task_id) if bus is not None else None

    async def pump_queue() -> None:
        try:
            async for task in queue.watch(task_id):
                await merged.put(("task", task))
        except Exception as exc:  # surfaces in the consumer
            await merged.put(("error", exc))
        else:
            await merged.put(("end", None))

    async def pump_bus() -> None:
        assert subscription is not None
        async for event in subscription:
            await merged.put(("bus", event))

    pumps = [asyncio.create_task(pump_queue())]
    if subscription is not None:
        pumps.append(asyncio.create_task(pump_bus()))
    tracker = Tracker(present)
    try:
        while not tracker.done:
            kind, item = await merged.get()
            if kind == "error":
                raise item
            if kind == "end":
                return
            for event in tracker.snapshot(item) if kind == "task" else tracker.bus(item):
                yield event
    finally:
        for pump in pumps:
            pump.cancel()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if subscription is not None:
            subscription.close()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
