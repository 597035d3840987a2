"""In-process bus of task events: progress and status as agents see them, for SSE.

The queue's ``watch`` sees what reaches the database (statuses, heartbeat-rate progress) on any
replica; this bus carries every progress step the agents of *this* process observe, at once and
without a database round trip. A subscriber registers when `subscribe` is called (not at first
iteration), so nothing published after that call is missed. Slow subscribers never block
publishers: a full subscription drops its oldest progress events, never a status event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from typing import Any

from comfyfleet.queue.base import FINISHED

Event = dict[str, Any]


def is_final(event: Event) -> bool:
    """A status event for a finished task ends every subscription to that task."""
    return event.get("type") == "status" and event.get("status") in FINISHED


class Subscription:
    """An async iterator of one task's events; ends after a final status event or `close`."""

    def __init__(self, bus: TaskEvents, task_id: str, maxlen: int) -> None:
        self._bus = bus
        self.task_id = task_id
        self._buffer: deque[Event] = deque()
        self._maxlen = maxlen
        self._wake = asyncio.Event()
        self._closed = False

    def _push(self, event: Event) -> None:
        if len(self._buffer) >= self._maxlen:
            # Keep status events; drop the oldest progress step instead.
            for index, queued in enumerate(self._buffer):
                if queued.get("type") != "status":
                    del self._buffer[index]
                    break
        self._buffer.append(event)
        self._wake.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        event = self._buffer.popleft()
        if is_final(event):
            self._buffer.clear()
            self.close()
        return event

    def close(self) -> None:
        """Unregister; iteration ends once buffered events are consumed."""
        if not self._closed:
            self._closed = True
            self._bus._remove(self)
            self._wake.set()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class TaskEvents:
    """Publish/subscribe by task id. All methods are called on the event loop's thread."""

    def __init__(self, maxlen: int = 256) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._maxlen = maxlen

    def publish(self, task_id: str, event: Event) -> None:
        """Deliver ``event`` (a JSON-able dict with a ``type``) to every current subscriber."""
        for sub in list(self._subs.get(task_id, ())):
            sub._push(event)

    def subscribe(self, task_id: str) -> Subscription:
        """Events of ``task_id`` from now on; use ``async with`` or call ``close`` when done."""
        sub = Subscription(self, task_id, self._maxlen)
        self._subs[task_id].add(sub)
        return sub

    def subscribers(self, task_id: str) -> int:
        return len(self._subs.get(task_id, ()))

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.task_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                with contextlib.suppress(KeyError):
                    del self._subs[sub.task_id]
