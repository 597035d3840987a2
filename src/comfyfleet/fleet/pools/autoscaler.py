"""The worker manager: pools scaled on the queue, by one leader among the gateway replicas.

The loop sleeps until something happens — a task is submitted or requeued (the queue's own
wake-up: in-process after SQLite commits, NOTIFY on PostgreSQL), a worker changes state (a task
started or finished on it, it became healthy, it failed) — or until a timer that matters comes
due (an idle worker's cooldown, crash-loop backoff, the start cap). Then every pool reconciles:
``desired = clamp(ceil((queued + running) / target), min, max)``; more workers start at once,
surplus idle workers are drained and stopped once idle for the cooldown.

Demand is model-aware: a queued task placed on model files (see `comfyfleet.fleet.placement`)
counts for the first pool that holds them all (with room, else the first), where "holds" is the
files its workers' catalogues listed (remembered while the pool is at zero); other queued
tasks flow down the pools in order, and each pool carries its own running tasks.

With several replicas on PostgreSQL, only the holder of a session advisory lock acts; the
others keep trying, and the one that takes over first adopts every worker its pools' providers
list as theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from comfyfleet.fleet.placement import files_of
from comfyfleet.fleet.pools.leader import AdvisoryLock, Leadership
from comfyfleet.fleet.pools.pool import Pool
from comfyfleet.fleet.pools.provider import Provider, make_provider
from comfyfleet.fleet.pools.spec import PoolSpec, parse_pools

if TYPE_CHECKING:
    from comfyfleet.fleet.manager import Fleet

log = logging.getLogger(__name__)

LEADER_RETRY = 5.0  # seconds between attempts to become leader


def owner_of(settings: Any) -> str:
    """Who owns the workers: one id per queue (the database and schema, or the SQLite data
    dir), so replicas of one gateway adopt each other's workers and two unrelated gateways on
    one Docker host or RunPod account never do."""
    if settings.database_url:
        parts = urlsplit(settings.database_url)
        where = f"{parts.hostname}:{parts.port}{parts.path}/{settings.database_schema}"
    else:
        where = str(Path(settings.data_dir).resolve())
    return f"{zlib.crc32(where.encode()):08x}"


class WorkerManager:
    """Owns the pools of one gateway; ``await start()`` after the fleet, ``stop()`` before."""

    def __init__(
        self,
        fleet: Fleet,
        specs: list[PoolSpec],
        *,
        providers: dict[str, Provider] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.fleet = fleet
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # replaced on every change: for `until`
        settings = fleet.settings
        owner = owner_of(settings)
        providers = providers or {}
        self.pools: dict[str, Pool] = {}
        for spec in specs:
            provider = providers.get(spec.name) or make_provider(
                spec, owner=owner, data_dir=settings.data_dir, settings=settings
            )
            self.pools[spec.name] = Pool(spec, provider, fleet, self.kick)
        if leadership is None:
            leadership = (
                AdvisoryLock(settings.database_url, settings.database_schema)
                if settings.database_url
                else Leadership()
            )
        self.leadership = leadership
        self.leader = False
        self._loop_task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.last_demand = 0
        self._first: float | None = None
        self._announced: dict[str, None] = {}  # tasks told they wait for a cold start
        # Model files each pool's workers listed (kept at zero workers) and, per backend, the
        # catalogue they were read from (read again only when it changes).
        self.pool_files: dict[str, frozenset[str]] = {}
        self._read: dict[str, tuple[Mapping[str, Any], frozenset[str]]] = {}

    @classmethod
    def from_settings(cls, fleet: Fleet) -> WorkerManager:
        return cls(fleet, parse_pools(list(fleet.settings.pools)))

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        for pool in self.pools.values():
            await pool.provider.check()
        self._first = await self.step()  # lead, adopt, start the minimum now
        self._loop_task = asyncio.create_task(self._run(), name="pools:autoscaler")
        self._listener = asyncio.create_task(self._listen(), name="pools:queue-events")

    async def stop(self) -> None:
        for task in (self._loop_task, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(pool.shutdown() for pool in self.pools.values()))
        for pool in self.pools.values():
            with contextlib.suppress(Exception):
                await pool.provider.close()
        await self.leadership.release()

    def kick(self) -> None:
        """Something changed: reconcile soon (coalesced)."""
        self._wake.set()
        self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def until(self, predicate: Any, timeout: float) -> None:
        """Wait until ``predicate(self)`` holds, re-checked at every worker or pool change
        (benchmarks and tests: no polling)."""

        async def wait() -> None:
            while True:
                event = self._changed
                if predicate(self):
                    return
                await event.wait()

        await asyncio.wait_for(wait(), timeout)

    # --- the loop -------------------------------------------------------------------------------
    async def _listen(self) -> None:
        """Queue events (submit, requeue) wake the loop."""
        # Tasks submitted before this listener first waits (a submit may commit without the
        # loop running anyone else) would be missed by the wait below: reconcile once now.
        self.kick()
        while True:
            try:
                if await self.fleet.queue.wait_for_work(30.0):
                    self.kick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker manager: waiting for queue events failed")
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        next_at: float | None = self._first
        while True:
            timeout = None if next_at is None else max(0.0, next_at - time.monotonic())
            if not self.leader:
                timeout = LEADER_RETRY if timeout is None else min(timeout, LEADER_RETRY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                next_at = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker manager: reconcile failed")
                next_at = time.monotonic() + 1.0
            self._notify()

    async def step(self) -> float | None:
        """One reconcile of every pool; returns when a timer wants the next one."""
        if not await self._lead():
            return None
        stats = await self.fleet.queue.stats()
        queued = stats.counts.get("queued", 0)
        placed: Counter[str] = Counter()
        general = queued  # queued tasks any pool may take
        if queued:
            placed, general = await self._placed_demand()
        self.last_demand = queued + sum(pool.running_tasks() for pool in self.pools.values())
        now = time.monotonic()
        wakes = []
        for name, pool in self.pools.items():
            own = placed[name] + pool.running_tasks()
            at = pool.reconcile(own + general, now)
            if at is not None:
                wakes.append(at)
            spare = round(len(pool.active()) * pool.spec.target) - own
            general = max(0, general - max(0, spare))
        if queued:
            await self._announce_cold_start()
        return min(wakes) if wakes else None

    async def _placed_demand(self) -> tuple[Counter[str], int]:
        """Queued tasks placed on model files, counted for the pool that should run them (the
        first that holds them all and has room, else the first that holds them), and the
        general rest: tasks without placement, or that no pool or every pool holds. One
        snapshot of the queue, so a claim meanwhile cannot count a task twice."""
        out: Counter[str] = Counter()
        general = 0
        held = {name: self._files_of(pool) for name, pool in self.pools.items()}
        for files, count in await self.fleet.queue.queued_models():
            holders = [
                n for n, have in held.items() if files and have is not None and set(files) <= have
            ]
            if not holders or len(holders) == len(self.pools):
                general += count
                continue
            room = [n for n in holders if len(self.pools[n].active()) < self.pools[n].spec.max]
            out[(room or holders)[0]] += count
        return out, general

    def _files_of(self, pool: Pool) -> frozenset[str] | None:
        """The model files a pool holds: what its live workers' catalogues list, else what
        they listed last (a pool at zero still holds its volume); None if never seen."""
        seen: list[frozenset[str]] = []
        for worker in pool.workers.values():
            agent = self.fleet.agents.get(worker.backend_name)
            catalogue = getattr(getattr(agent, "runner", None), "catalogue", None)
            info = catalogue() if callable(catalogue) else None
            if info is None:
                continue
            read = self._read.get(worker.backend_name)
            if read is None or read[0] is not info:
                read = self._read[worker.backend_name] = (info, files_of(info))
            seen.append(read[1])
        if seen:
            self.pool_files[pool.spec.name] = frozenset().union(*seen)
        live = {w.backend_name for p in self.pools.values() for w in p.workers.values()}
        for gone in set(self._read) - live:
            del self._read[gone]
        return self.pool_files.get(pool.spec.name)

    async def _announce_cold_start(self) -> None:
        """Tasks waiting while no worker is ready but some are starting get a progress event
        saying so (once per task), so a client following one sees why it waits."""
        workers = [w for pool in self.pools.values() for w in pool.workers.values()]
        if any(w.state in ("idle", "busy") for w in workers):
            return
        starting = sorted({w.pool for w in workers if w.state == "starting"})
        if not starting:
            return
        page = await self.fleet.queue.list(status="queued", limit=100)
        message = f"waiting for a worker to start (cold start, pool {', '.join(starting)})"
        for task in page.items:
            if task.id in self._announced:
                continue
            self._announced[task.id] = None
            event = {"type": "progress", "job_id": task.id, "stage": "waiting_for_worker",
                     "message": message}  # fmt: skip
            self.fleet.events.publish(task.id, event)
        while len(self._announced) > 10_000:
            del self._announced[next(iter(self._announced))]

    async def _lead(self) -> bool:
        was = self.leader
        self.leader = await self.leadership.acquire()
        if self.leader and not was:
            log.info("worker manager: leader; adopting running workers")
            await self.adopt()
        elif was and not self.leader:
            log.warning("worker manager: lost leadership; no longer scaling")
        return self.leader

    async def adopt(self) -> int:
        """Take over the live workers the providers list that no pool of ours tracks."""
        adopted = 0
        for pool in self.pools.values():
            try:
                owned = await pool.provider.list_owned()
            except Exception as exc:
                log.warning("pool %s: cannot list its workers: %r", pool.spec.name, exc)
                continue
            for handle in owned:
                if handle.id not in pool.workers:
                    pool.adopt(handle)
                    adopted += 1
        return adopted

    # --- views ----------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        out = []
        for pool in self.pools.values():
            for view in pool.views():
                view["provider"] = pool.spec.provider
                out.append(view)
        return out

    def counts(self) -> dict[str, int]:
        """Seed 004's worker counts for the pools' workers (live ones; failed = failed and
        still shown)."""
        states = Counter(w.state for pool in self.pools.values() for w in [*pool.workers.values()])
        failed = sum(
            1 for pool in self.pools.values() for w in pool.finished if w.state == "failed"
        )
        live = states["starting"] + states["idle"] + states["busy"] + states["draining"]
        return {
            "total_workers": live,
            "idle_workers": states["idle"],
            "running_workers": states["busy"],
            "starting_workers": states["starting"],
            "failed_workers": failed,
            "draining_workers": states["draining"],
        }

    def pool_stats(self) -> list[dict[str, Any]]:
        out = []
        for pool in self.pools.values():
            states = Counter(w.state for w in pool.workers.values())
            out.append(
                {
                    "pool": pool.spec.name,
                    "provider": pool.spec.provider,
                    "spec": pool.spec.describe(),
                    "states": dict(states),
                    "started": pool.started_total,
                    "stopped": pool.stopped_total,
                    "failed": pool.failed_total,
                    "crash_loop": pool.crashes,
                }
            )
        return out
