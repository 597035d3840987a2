"""Prometheus metrics, one registry per app (so two apps in one process never collide).

Gauges are read from the queue and the fleet at scrape time, so every replica reports the shared
queue as it is and its own backends; histograms and counters count what this process saw.
What an autoscaler needs: ``comfyfleet_queue_depth`` by priority,
``comfyfleet_queue_oldest_age_seconds``, ``comfyfleet_backends`` by state and
``comfyfleet_task_duration_seconds``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from comfyfleet.queue import STATUSES, QueueStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BACKEND_STATES = (
    "idle",
    "busy",
    "starting",
    "unhealthy",
    "offline",
    "draining",
    "drained",
    "stopped",
)
_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def worker_counts(backends: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Seed 004's worker metrics from backend snapshots.

    A backend that has not passed its first health check yet is *starting*; one whose checks
    fail (or a remote agent that stopped calling in) is *failed*; *running* means it runs at
    least one task. The snapshots' ``state`` is the fleet's one state (`registry.consistent`),
    so these counts, ``/metrics`` and the dashboard never disagree."""
    counts = Tally[str]()
    for backend in backends:
        counts["total_workers"] += 1
        state = backend.get("state")
        if state in ("draining", "drained"):
            counts["draining_workers"] += 1
        elif state == "starting":
            counts["starting_workers"] += 1
        elif state in ("unhealthy", "offline", "stopped"):
            counts["failed_workers"] += 1
        elif backend.get("running"):
            counts["running_workers"] += 1
        else:
            counts["idle_workers"] += 1
    keys = ("total", "idle", "running", "starting", "failed", "draining")
    return {f"{key}_workers": counts[f"{key}_workers"] for key in keys}


def pool_worker_counts(backends: list[dict[str, Any]], manager: Any) -> dict[str, int]:
    """`worker_counts` where the worker manager's workers count as it sees them (starting
    before they are backends at all; failed with a reason) and the other backends as before."""
    if manager is None:
        return worker_counts(backends)
    pooled = {view["backend"] for view in manager.workers() if view.get("backend")}
    counts = worker_counts(b for b in backends if b.get("name") not in pooled)
    for key, value in manager.counts().items():
        counts[key] = counts.get(key, 0) + value
    return counts


class PoolCollector:
    """Per pool, read at scrape time from the worker manager: ``comfyfleet_pool_workers{pool,
    state}``, ``comfyfleet_pool_desired_demand`` and the counters
    ``comfyfleet_pool_worker_starts_total``, ``_stops_total`` and ``_failures_total``."""

    STATES = ("starting", "idle", "busy", "draining")

    def __init__(self) -> None:
        self.manager: Any = None

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        manager = self.manager
        if manager is None:
            return
        workers = GaugeMetricFamily(
            "comfyfleet_pool_workers", "Workers of each pool by state.", labels=["pool", "state"]
        )
        starts = CounterMetricFamily(
            "comfyfleet_pool_worker_starts", "Worker start attempts by pool.", labels=["pool"]
        )
        stops = CounterMetricFamily(
            "comfyfleet_pool_worker_stops", "Workers stopped by pool.", labels=["pool"]
        )
        failures = CounterMetricFamily(
            "comfyfleet_pool_worker_failures", "Workers failed by pool.", labels=["pool"]
        )
        for stats in manager.pool_stats():
            pool = stats["pool"]
            for state in self.STATES:
                workers.add_metric([pool, state], stats["states"].get(state, 0))
            starts.add_metric([pool], stats["started"])
            stops.add_metric([pool], stats["stopped"])
            failures.add_metric([pool], stats["failed"])
        demand = GaugeMetricFamily(
            "comfyfleet_pool_demand", "Queued + running tasks the autoscaler last scaled for."
        )
        demand.add_metric([], manager.last_demand)
        yield from (workers, starts, stops, failures, demand)


def backend_state(backend: dict[str, Any]) -> str:
    """The state shown for a backend (already made consistent by the fleet)."""
    return str(backend.get("state", "unknown"))


class TaskTotals:
    """``comfyfleet_backend_tasks_total{outcome}`` (tasks executed and failed by every backend
    this replica has known, forgotten remote agents included) and
    ``comfyfleet_remote_agents_expired_total``: counters that never go back when an agent that
    stopped calling in is pruned."""

    def __init__(self) -> None:
        self.executed = self.failed = self.expired = 0

    def update(self, backends: Iterable[dict[str, Any]], retired: dict[str, int]) -> None:
        live = list(backends)
        self.executed = sum(int(b.get("executed") or 0) for b in live) + retired["executed"]
        self.failed = sum(int(b.get("failed") or 0) for b in live) + retired["failed"]
        self.expired = retired["agents"]

    def collect(self) -> Iterable[CounterMetricFamily]:
        tasks = CounterMetricFamily(
            "comfyfleet_backend_tasks",
            "Tasks run to the end by this replica's backends (remote agents since forgotten "
            "included), by outcome.",
            labels=["outcome"],
        )
        tasks.add_metric(["succeeded"], self.executed)
        tasks.add_metric(["failed"], self.failed)
        yield tasks
        expired = CounterMetricFamily(
            "comfyfleet_remote_agents_expired",
            "Remote agents forgotten after not calling in for COMFYFLEET_AGENT_EXPIRY_SECONDS.",
        )
        expired.add_metric([], self.expired)
        yield expired


class FilesLeft:
    """``comfyfleet_backend_files_left_total{backend,folder}``: files jobs left in a ComfyUI
    folder this gateway cannot reach (`comfyfleet.fleet.folders` counts them), read from the
    backends' snapshots at scrape time; 0 for every folder that is wiped."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], int] = {}

    def update(self, backends: Iterable[dict[str, Any]]) -> None:
        self.values = {
            (str(backend.get("name")), str(folder)): int(count)
            for backend in backends
            for folder, count in (backend.get("files_left") or {}).items()
        }

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "comfyfleet_backend_files_left",
            "Files jobs left in a ComfyUI folder not reachable from this gateway (inputs "
            "uploaded, outputs of finished prompts), by backend and folder.",
            labels=["backend", "folder"],
        )
        for (backend, folder), count in sorted(self.values.items()):
            family.add_metric([backend, folder], count)
        yield family


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.files_left = FilesLeft()
        registry.register(self.files_left)  # type: ignore[arg-type]
        self.tasks = Gauge(
            "comfyfleet_tasks", "Tasks in the queue by status.", ["status"], registry=registry
        )
        self.queue_depth = Gauge(
            "comfyfleet_queue_depth",
            "Queued tasks by priority.",
            ["priority"],
            registry=registry,
        )
        self.queue_depth_total = Gauge(
            "comfyfleet_queue_depth_total", "Queued tasks, all priorities.", registry=registry
        )
        self.oldest_age = Gauge(
            "comfyfleet_queue_oldest_age_seconds",
            "Age of the oldest queued task (0 when the queue is empty).",
            registry=registry,
        )
        self.backends = Gauge(
            "comfyfleet_backends", "Backends by state.", ["state"], registry=registry
        )
        self.backend_up = Gauge(
            "comfyfleet_backend_up",
            "1 if the backend is healthy.",
            ["backend", "kind", "label"],
            registry=registry,
        )
        self.backend_running = Gauge(
            "comfyfleet_backend_running_tasks",
            "Tasks a backend runs now.",
            ["backend"],
            registry=registry,
        )
        self.durations = Histogram(
            "comfyfleet_task_duration_seconds",
            "Run time (start to finish) of tasks run by this replica's agents.",
            ["status"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.submitted = Counter(
            "comfyfleet_tasks_submitted",
            "Tasks created through this gateway, by body shape.",
            ["source"],
            registry=registry,
        )
        self.webhooks = Counter(
            "comfyfleet_webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.pools = PoolCollector()
        registry.register(self.pools)  # type: ignore[arg-type]
        for status in STATUSES:
            self.tasks.labels(status)
        for state in BACKEND_STATES:
            self.backends.labels(state)
        self.totals = TaskTotals()  # updated by the /metrics route with the fleet's totals
        registry.register(self.totals)  # type: ignore[arg-type]

    def update(self, stats: QueueStats, backends: list[dict[str, Any]]) -> None:
        self.files_left.update(backends)
        for status in STATUSES:
            self.tasks.labels(status).set(stats.counts.get(status, 0))
        self.queue_depth.clear()
        for priority, depth in stats.depth_by_priority.items():
            self.queue_depth.labels(str(priority)).set(depth)
        self.queue_depth_total.set(sum(stats.depth_by_priority.values()))
        self.oldest_age.set(stats.oldest_queued_age or 0.0)
        states = Tally(backend_state(b) for b in backends)
        for state in {*BACKEND_STATES, *states}:
            self.backends.labels(state).set(states.get(state, 0))
        self.backend_up.clear()
        self.backend_running.clear()
        for backend in backends:
            name = str(backend.get("name"))
            label = str(backend.get("label") or "")
            self.backend_up.labels(name, str(backend.get("kind", "")), label).set(
                1 if backend.get("healthy") else 0
            )
            self.backend_running.labels(name).set(len(backend.get("running") or ()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
