"""One backend's dispatch state: healthy or not, draining or not, how many tasks it runs.

An agent asks `Backend.wait_ready` before every claim. That returns at once while the backend
is healthy, not draining and has a free slot (``capacity`` running plus ``depth`` prompts
prefetched into the backend's own queue); otherwise it sleeps until something changes
(drain lifted, slot freed, stop) or the next health check is due. A failed check (or a backend
fault seen while running a task) marks the backend unhealthy, and checks are retried with
exponential backoff, so a dead ComfyUI never claims tasks it cannot run. A local ComfyUI's
checks are cheap (a refused connection answers at once), so they back off to at most
`LOCAL_HEALTH_BACKOFF`'s 1 s: a restarted ComfyUI is back in use within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

BackendKind = Literal["local", "remote", "runpod"]
HealthCheck = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * factor**(n-1)`` capped at ``maximum``."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        base = min(self.maximum, self.initial * self.factor ** (failures - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


#: Health-check backoff of local ComfyUIs: a restarted one is noticed within about a second.
LOCAL_HEALTH_BACKOFF = Backoff(initial=0.25, maximum=1.0)


class Backend:
    """Health, drain and load of one execution target; safe to share by several coroutines."""

    def __init__(
        self,
        name: str,
        *,
        kind: BackendKind,
        url: str | None = None,
        check: HealthCheck | None = None,
        capacity: int = 1,
        depth: int = 0,
        backoff: Backoff | None = None,
        healthy: bool | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.url = url
        self.capacity = capacity  # tasks it runs at once
        self.depth = depth  # more tasks kept waiting in its own queue (pipelined dispatch)
        self.backoff = backoff or Backoff()
        self._check = check
        # Unchecked backends are checked before their first claim.
        self.healthy = healthy if healthy is not None else check is None
        self.draining = False
        self.stopped = False
        self.running: set[str] = set()  # tasks occupying a slot (running or prefetched)
        self.delivering: set[str] = set()  # tasks whose prompt is done, outputs on the way
        self.failures = 0  # consecutive failed checks / faults
        self.last_error: str | None = None
        self.next_check_at = 0.0  # monotonic
        self.executed = 0
        self.failed = 0
        self.last_seen: float | None = None  # remote agents: last request
        self.claiming = 0  # claims in flight (waiting for work)
        self.listeners: set[Callable[[], None]] = set()  # called on every state change
        self._changed = asyncio.Event()

    # --- state changes ------------------------------------------------------------------------
    def notify(self) -> None:
        """Wake everyone waiting on `changed`; call the listeners."""
        for listener in list(self.listeners):
            listener()
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def drain(self) -> None:
        """Finish what runs, claim nothing more."""
        self.draining = True
        self.notify()

    def undrain(self) -> None:
        self.draining = False
        self.notify()

    def stop(self) -> None:
        self.stopped = True
        self.notify()

    def mark_unhealthy(self, error: str, *, recheck_after: float | None = None) -> None:
        """A fault was seen: no claims until a health check passes, after a backoff."""
        self.failures += 1
        self.healthy = False
        self.last_error = error
        delay = self.backoff.delay(self.failures)
        if recheck_after is not None:
            delay = max(delay, recheck_after)
        self.next_check_at = time.monotonic() + delay
        log.warning("backend %s unhealthy (%s); next check in %.2fs", self.name, error, delay)
        self.notify()

    def mark_healthy(self) -> None:
        if not self.healthy:
            log.info("backend %s healthy", self.name)
        self.healthy = True
        self.failures = 0
        self.last_error = None
        self.notify()

    def started(self, task_id: str) -> None:
        self.running.add(task_id)

    def release(self, task_id: str) -> None:
        """The task's prompt is done: the backend is free while its outputs are delivered."""
        if task_id in self.running:
            self.running.discard(task_id)
            self.delivering.add(task_id)
            self.notify()

    def finished(self, task_id: str, *, ok: bool) -> None:
        self.running.discard(task_id)
        self.delivering.discard(task_id)
        if ok:
            self.executed += 1
        else:
            self.failed += 1
        self.notify()

    # --- waiting ------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.capacity + self.depth

    @property
    def has_slot(self) -> bool:
        return len(self.running) < self.slots

    @property
    def state(self) -> str:
        if self.stopped:
            return "stopped"
        if self.draining:
            return "draining" if self.running or self.delivering else "drained"
        if not self.healthy:
            return "unhealthy"
        return "busy" if len(self.running) >= self.capacity else "idle"

    def change_event(self) -> asyncio.Event:
        """The event set at the next state change (take it, check state, then wait on it)."""
        return self._changed

    def changed(self, timeout: float | None = None) -> Awaitable[None]:
        """An awaitable that completes at the next state change after *this call* (or after
        ``timeout``). The change event is taken now, so a change between this call and the
        first await is not missed."""
        return self._wait(self._changed, timeout)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def wait_ready(self) -> bool:
        """Wait until this backend may claim (healthy, not draining, free slot); False if
        stopped. Runs due health checks meanwhile."""
        while True:
            event = self._changed
            if self.stopped:
                return False
            if self.draining or not self.has_slot:
                await event.wait()
                continue
            if self.healthy:
                return True
            due_in = self.next_check_at - time.monotonic()
            if due_in > 0:
                await self._wait(event, due_in)
                continue
            await self.check()

    async def check(self) -> bool:
        """Run the health check now; update state. No check configured means healthy."""
        if self._check is None:
            self.mark_healthy()
            return True
        try:
            await self._check()
        except Exception as exc:
            self.mark_unhealthy(f"health check failed: {exc!r}")
            return False
        self.mark_healthy()
        return True

    def snapshot(self) -> dict[str, Any]:
        """What ``Fleet.backends()`` (and the admin API) shows."""
        now = time.monotonic()
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "state": self.state,
            "healthy": self.healthy,
            "draining": self.draining,
            "capacity": self.capacity,
            "depth": self.depth,
            "running": sorted(self.running),
            "delivering": sorted(self.delivering),
            "claiming": self.claiming,
            "executed": self.executed,
            "failed": self.failed,
            "failures": self.failures,
            "last_error": self.last_error,
            "next_check_in": (
                round(max(0.0, self.next_check_at - now), 3) if not self.healthy else None
            ),
            "last_seen_ago": round(now - self.last_seen, 3) if self.last_seen else None,
        }


def claimable(backend: Backend) -> bool:
    return backend.healthy and not (backend.stopped or backend.draining)


async def claim_while_claimable(backend: Backend, claim: Awaitable[T]) -> T | None:
    """Await ``claim`` (which waits for work) unless ``backend`` stops being claimable first
    (drain, stop, unhealthy): then the waiting task is cancelled and None returned, so a
    drained backend takes nothing more. A claim that completes despite the cancel (it raced
    the drain) returns its task, which then runs. ``backend.claiming`` counts claims in flight.
    (Like ``asyncio.timeout``: the current task is cancelled and uncancelled, no extra task.)"""
    me = asyncio.current_task()
    assert me is not None
    if not claimable(backend):
        if inspect.iscoroutine(claim):
            claim.close()
        return None
    interrupted = False

    def on_change() -> None:
        nonlocal interrupted
        if not interrupted and not claimable(backend):
            interrupted = True
            me.cancel()

    backend.claiming += 1
    backend.listeners.add(on_change)
    try:
        result = await claim
    except asyncio.CancelledError:
        if interrupted and me.uncancel() == 0:
            return None
        raise
    finally:
        backend.listeners.discard(on_change)
        backend.claiming -= 1
        backend.notify()
    if interrupted:
        me.uncancel()
    return result
