"""One pool's workers and their lifecycle.

    starting ──healthy──▶ idle ⇄ busy ──(scale down / shutdown)──▶ draining ──▶ stopped
        │                   │      │
        └── exit, health timeout, crash, failing checks ──▶ failed (reason kept, logs kept)

A worker becomes a fleet backend (a local agent against its URL) the moment its ComfyUI
answers; idle/busy is read from that backend (tasks it runs or delivers). Only idle workers
are picked for scale-down, and they are drained first, so a claim that raced the decision
still runs to its end before the worker is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from comfyfleet.fleet.backend import Backend
from comfyfleet.fleet.pools.provider import Provider, WorkerHandle
from comfyfleet.fleet.pools.spec import PoolSpec, WorkerSpec

if TYPE_CHECKING:
    from comfyfleet.fleet.manager import Fleet

log = logging.getLogger(__name__)

ACTIVE = ("starting", "idle", "busy")
STABLE_AFTER = 30.0  # a worker healthy this long resets the crash-loop count
MAX_BACKOFF = 120.0
KEEP_FINISHED = 20  # stopped/failed workers kept for the operator view


@dataclass(eq=False)
class Worker:
    id: str
    pool: str
    slot: int
    state: str = "starting"
    reason: str | None = None  # why it failed / was stopped
    handle: WorkerHandle | None = None
    backend: Backend | None = None
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    ready_at: float | None = None
    idle_since: float = field(default_factory=time.monotonic)
    unhealthy_since: float | None = None
    logs: str | None = None
    adopted: bool = False
    task: asyncio.Task[None] | None = None
    _ended: int = 0  # tasks the backend had ended at the last refresh
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def backend_name(self) -> str:
        return f"{self.pool}/{self.id}"

    def refresh(self) -> bool:
        """Follow the backend: busy while it runs, holds (prefetched) or delivers a task; the
        idle clock restarts whenever a task ended since the last look. True if changed."""
        backend = self.backend
        if backend is None or self.state not in ("idle", "busy"):
            return False
        if backend.healthy:
            self.unhealthy_since = None
        elif self.unhealthy_since is None:
            self.unhealthy_since = time.monotonic()
            self.wake.set()
        ended = backend.executed + backend.failed
        new = "busy" if backend.running or backend.delivering else "idle"
        if new == "idle" and (self.state == "busy" or ended != self._ended):
            self.idle_since = time.monotonic()
        self._ended = ended
        if new == self.state:
            return False
        self.state = new
        return True

    def view(self) -> dict[str, Any]:
        self.refresh()
        now = time.monotonic()
        backend = self.backend
        return {
            "id": self.id,
            "pool": self.pool,
            "state": self.state,
            "backend": self.backend_name if backend is not None else None,
            "url": self.handle.url if self.handle else None,
            "ref": self.handle.ref if self.handle else None,
            "age_seconds": round(now - self.created, 3),
            "ready_after_seconds": (
                round(self.ready_at - self.created, 3) if self.ready_at else None
            ),
            "idle_seconds": round(now - self.idle_since, 3) if self.state == "idle" else None,
            "current_tasks": sorted(backend.running | backend.delivering) if backend else [],
            "executed": backend.executed if backend else 0,
            "last_error": self.reason
            if self.state == "failed"
            else (backend.last_error if backend else None),
            "reason": self.reason,
            "adopted": self.adopted,
            "logs": self.logs,
        }


class Pool:
    """Starts, watches, drains and stops the workers of one `PoolSpec`."""

    def __init__(self, spec: PoolSpec, provider: Provider, fleet: Fleet, kick: Any) -> None:
        self.spec = spec
        self.provider = provider
        self.fleet = fleet
        self._kick = kick
        self.workers: dict[str, Worker] = {}
        self.finished: deque[Worker] = deque(maxlen=KEEP_FINISHED)
        self.start_times: deque[float] = deque()
        self.crashes = 0  # in a row: failed before being healthy for STABLE_AFTER
        self.next_start_at = 0.0
        self.started_total = 0
        self.stopped_total = 0
        self.failed_total = 0
        self._background: set[asyncio.Task[None]] = set()

    # --- views ----------------------------------------------------------------------------------
    def active(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.state in ACTIVE]

    def running_tasks(self) -> int:
        return sum(
            len(w.backend.running | w.backend.delivering) for w in self.active() if w.backend
        )

    def views(self) -> list[dict[str, Any]]:
        return [w.view() for w in [*self.workers.values(), *self.finished]]

    # --- decisions --------------------------------------------------------------------------
    def reconcile(self, demand: int, now: float) -> float | None:
        """Start or retire workers for ``demand`` queued + running tasks. Returns when to look
        again (monotonic) if a timer matters: cooldown expiry, backoff or the start cap."""
        for worker in self.active():
            worker.refresh()
            if worker.ready_at and now - worker.ready_at >= STABLE_AFTER:
                self.crashes = 0
        active = self.active()
        want = self.spec.desired(demand)
        wake: list[float] = []
        if want > len(active):
            for _ in range(want - len(active)):
                at = self._start_allowed_at(now)
                if at > now:
                    wake.append(at)
                    break
                self.start_worker()
        elif want < len(active):
            idle = sorted((w for w in active if w.state == "idle"), key=lambda w: w.idle_since)
            surplus = len(active) - want
            for worker in idle:
                if surplus <= 0:
                    break
                due = worker.idle_since + self.spec.cooldown
                if due <= now:
                    self.retire(worker, reason="idle for the cooldown")
                    surplus -= 1
                else:
                    wake.append(due)
        return min(wake) if wake else None

    def _start_allowed_at(self, now: float) -> float:
        while self.start_times and now - self.start_times[0] >= 60.0:
            self.start_times.popleft()
        at = self.next_start_at
        if len(self.start_times) >= self.spec.starts_per_minute:
            at = max(at, self.start_times[0] + 60.0)
        return at

    # --- lifecycle ------------------------------------------------------------------------------
    def start_worker(self) -> Worker:
        used = {w.slot for w in self.active()}
        slot = next(i for i in range(self.spec.max + len(used) + 1) if i not in used)
        worker = Worker(f"w{slot}-{uuid.uuid4().hex[:6]}", self.spec.name, slot)
        self.workers[worker.id] = worker
        self.start_times.append(time.monotonic())
        self.started_total += 1
        log.info("pool %s: starting worker %s", self.spec.name, worker.id)
        worker.task = asyncio.create_task(self._run(worker), name=f"pool:{worker.backend_name}")
        return worker

    def adopt(self, handle: WorkerHandle) -> Worker:
        """Take over a worker some earlier manager started (restart, leader change)."""
        slot = len(self.workers)
        worker = Worker(handle.id, self.spec.name, slot, handle=handle, adopted=True)
        worker.created_wall = handle.created_at
        self.workers[worker.id] = worker
        log.info("pool %s: adopting worker %s (%s)", self.spec.name, handle.id, handle.ref)
        worker.task = asyncio.create_task(self._run(worker), name=f"pool:{worker.backend_name}")
        return worker

    def retire(self, worker: Worker, *, reason: str) -> None:
        """Drain then stop (never interrupts a task)."""
        if worker.state not in ACTIVE:
            return
        was_starting = worker.state == "starting"
        worker.state = "draining"
        worker.reason = reason
        if worker.backend is not None:
            worker.backend.drain()
        worker.wake.set()
        if was_starting and worker.task is not None:
            worker.task.cancel()
            stopping = asyncio.create_task(self._stop(worker, "stopped"))
            self._background.add(stopping)
            stopping.add_done_callback(self._background.discard)

    async def _run(self, worker: Worker) -> None:
        try:
            if worker.handle is None:
                spec = WorkerSpec(
                    pool=self.spec.name,
                    worker_id=worker.id,
                    slot=worker.slot,
                    options=self.spec.options,
                    labels={},
                    data_dir=self.provider.data_dir,
                )
                worker.handle = await _uncancellable(self.provider.start(spec))
            url = await self.provider.wait_healthy(worker.handle, self.spec.start_timeout)
            worker.backend = self.fleet.add_backend(
                worker.backend_name, url, {"pool": self.spec.name, "worker": worker.id}
            )
            worker.backend.listeners.add(lambda: self._on_backend(worker))
            worker.ready_at = worker.idle_since = time.monotonic()
            worker.state = "idle"
            log.info(
                "pool %s: worker %s healthy after %.3f s at %s",
                self.spec.name,
                worker.id,
                worker.ready_at - worker.created,
                url,
            )
            self._kick()
            await self._watch(worker)
        except _Started as started:
            worker.handle = started.handle
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(worker, str(exc) or type(exc).__name__)

    def _on_backend(self, worker: Worker) -> None:
        if worker.refresh():
            self._kick()
        if worker.state == "draining":
            worker.wake.set()

    async def _watch(self, worker: Worker) -> None:
        """Until the worker is stopped: probe the provider every ``health_interval`` (and at
        once when the backend turns unhealthy); fail it when it is gone or unhealthy too long;
        finish a drain once its last task is done."""
        assert worker.handle is not None and worker.backend is not None
        backend = worker.backend
        while True:
            if worker.state == "draining":
                if not (backend.running or backend.delivering):
                    await self._stop(worker, "stopped")
                    return
                await backend.changed(self.spec.health_interval)
                continue
            worker.wake.clear()
            health = await self.provider.health(worker.handle)
            if not health.alive:
                await self._fail(worker, health.reason or "the worker is gone")
                return
            problem = await self._probe(backend)
            if problem is not None and backend.healthy:
                backend.mark_unhealthy(problem)  # no claims while it does not answer
            worker.refresh()
            since = worker.unhealthy_since
            if since is not None and time.monotonic() - since >= self.spec.unhealthy_after:
                await self._fail(
                    worker,
                    f"health checks failing for {self.spec.unhealthy_after:.0f} s: "
                    f"{backend.last_error}",
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wake.wait(), self._next_probe(worker))

    async def _probe(self, backend: Backend) -> str | None:
        """Ask ComfyUI itself (a live process may hang): None when ``/system_stats`` answers."""
        timeout = min(5.0, max(0.5, self.spec.unhealthy_after / 3))
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
                response = await http.get(f"{backend.url}/system_stats")
        except httpx.HTTPError as exc:
            return f"health probe failed: {type(exc).__name__}"
        if response.status_code != 200:
            return f"health probe answered {response.status_code}"
        return None

    def _next_probe(self, worker: Worker) -> float:
        if worker.unhealthy_since is None:
            return self.spec.health_interval
        left = worker.unhealthy_since + self.spec.unhealthy_after - time.monotonic()
        return max(0.01, min(self.spec.health_interval, left))

    async def _fail(self, worker: Worker, reason: str) -> None:
        if worker.state in ("failed", "stopped"):
            return
        early = worker.ready_at is None or time.monotonic() - worker.ready_at < STABLE_AFTER
        log.warning("pool %s: worker %s failed: %s", self.spec.name, worker.id, reason)
        worker.state = "failed"
        worker.reason = reason
        self.failed_total += 1
        if early:
            self.crashes += 1
            delay = min(MAX_BACKOFF, 2.0 ** (self.crashes - 1)) if self.crashes > 1 else 0.0
            self.next_start_at = time.monotonic() + delay
        if worker.handle is not None:
            with contextlib.suppress(Exception):
                worker.logs = await self.provider.logs(worker.handle) or None
        await self._teardown(worker)
        self._kick()

    async def _stop(self, worker: Worker, state: str) -> None:
        await self._teardown(worker)
        if worker.state != "failed":
            worker.state = state
        self.stopped_total += 1
        log.info("pool %s: worker %s %s (%s)", self.spec.name, worker.id, state, worker.reason)
        self._kick()

    async def _teardown(self, worker: Worker) -> None:
        """Remove the backend (its agent hands any running task back to the queue at once),
        then stop the worker. Moves it to the finished list."""
        if worker.backend is not None:
            worker.backend.drain()
            with contextlib.suppress(Exception):
                await self.fleet.remove_backend(worker.backend_name)
        if worker.handle is not None:
            try:
                await self.provider.stop(worker.handle)
            except Exception as exc:
                log.warning("pool %s: stopping %s failed: %r", self.spec.name, worker.id, exc)
        if self.workers.pop(worker.id, None) is not None:
            self.finished.append(worker)

    async def shutdown(self) -> None:
        """Stop every worker now (gateway shutdown): running tasks go back to the queue."""
        workers = list(self.workers.values())
        for worker in workers:
            if worker.task is not None and worker.task is not asyncio.current_task():
                worker.task.cancel()
        await asyncio.gather(
            *(w.task for w in workers if w.task is not None), return_exceptions=True
        )
        for worker in workers:
            worker.reason = worker.reason or "gateway shutdown"
        await asyncio.gather(*(self._stop(w, "stopped") for w in workers if w.id in self.workers))


async def _uncancellable(start: Any) -> WorkerHandle:
    """Await a provider's start to its end even if we are cancelled meanwhile (shutdown), so
    a container or pod it created is known and stopped, never leaked; then re-raise."""
    job = asyncio.ensure_future(start)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            handle = await job
            raise _Started(handle) from None
        raise


class _Started(asyncio.CancelledError):
    """Cancelled after the provider had started the worker: carries its handle."""

    def __init__(self, handle: WorkerHandle) -> None:
        super().__init__()
        self.handle = handle
