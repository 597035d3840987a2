"""The queue contract: task records and the abstract `Queue` every engine implements.

Agents pull: `claim` a task (a lease), `heartbeat` while running it, then `complete` or `fail`.
A lease that is not extended comes back through `expire_leases` (the gateway's reaper). Every
finish (succeeded, failed, cancelled) writes the webhook outbox row in the same transaction.
Times are timezone-aware UTC datetimes read from the queue's injectable ``clock``, so tests move
time forward instead of sleeping. Engines: `SqliteQueue` (one process) and `PostgresQueue`.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[TaskStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One outbox row: a POST of ``body`` to ``url`` owed for a finished task."""

    id: int
    task_id: str
    url: str
    body: dict[str, Any]
    attempts: int
    next_attempt_at: datetime | None  # None once delivered or given up
    delivered_at: datetime | None
    last_error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Task:
    """A queued job as the queue sees it; ``payload`` is opaque JSON (JobSpec dict + options)."""

    id: str
    seq: int  # enqueue order: FIFO within a priority
    status: TaskStatus
    priority: int  # higher runs first
    payload: dict[str, Any]
    idempotency_key: str | None
    attempts: int
    max_attempts: int
    run_at: datetime  # not claimable before (retry backoff)
    timeout_seconds: float | None  # per attempt; sets deadline_at at claim
    deadline_at: datetime | None
    target: str | None  # only claimers listing this target may run it; None = anyone
    backend: str | None  # who runs / ran it (set by claim)
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    webhook_url: str | None
    models: list[str] | None = None  # model files it needs ("folder/file"); None = any claimer
    checkpoint: str | None = None  # its warm key: claimers that ran it last prefer the task
    deliveries: tuple[WebhookDelivery, ...] = ()  # filled by `get` only

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True, slots=True)
class Fit:
    """What a claimer runs well (model-aware placement, see docs/fleet.md).

    ``have``: the model files it has; it takes tasks without ``models``, those whose models it
    all has, and any other once that task has been due for the queue's ``placement_wait``
    (nobody starves behind a busy or vanished backend). None: unknown, it takes any task.
    ``warm``: the checkpoint it ran last; among the first ``affinity_window`` tasks it could
    take (same priority), it takes one with that checkpoint first."""

    have: frozenset[str] | None = None
    warm: str | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """What a heartbeat tells the agent: stop if the lease is lost or cancel was requested."""

    lease_lost: bool
    cancel_requested: bool
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskPage:
    items: list[Task]
    next_cursor: str | None  # pass back as ``cursor`` for the next (older) page


@dataclass(frozen=True, slots=True)
class QueueStats:
    counts: dict[str, int]  # every status, zeros included
    depth_by_priority: dict[int, int]  # queued tasks per priority
    oldest_queued_age: float | None  # seconds since the oldest queued task was created
    extra: dict[str, Any] = field(default_factory=dict)


class Queue(abc.ABC):
    """A durable priority queue of tasks. Use as ``async with open_queue(url) as q``."""

    clock: Clock
    # Placement (see `Fit`): seconds a due task waits for a claimer that has its models before
    # anyone may take it, and how many takeable head tasks a warm claimer looks through.
    placement_wait: float = 30.0
    affinity_window: int = 8

    async def __aenter__(self) -> Queue:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, apply migrations, start listening for notifications."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending numbered migrations; returns the versions applied now."""

    @abc.abstractmethod
    async def submit(
        self,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int = 3,
        timeout_seconds: float | None = None,
        webhook_url: str | None = None,
        run_at: datetime | None = None,
        target: str | None = None,
        task_id: str | None = None,
        fingerprint: str | None = None,
        models: Collection[str] | None = None,
        checkpoint: str | None = None,
    ) -> tuple[Task, bool]:
        """Enqueue; ``models``/``checkpoint`` are its placement (see `Fit`; empty models are
        stored as None). with a known ``idempotency_key`` return the existing task and False, or
        raise Conflict if that task was submitted with another ``fingerprint`` (the caller's
        hash of what was asked; kept with the task). A ``task_id`` that already exists without
        that key raises Conflict."""

    @abc.abstractmethod
    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        *,
        backend: str | None = None,
        targets: Collection[str] | None = None,
        wait: float = 0.0,
        fit: Fit | None = None,
    ) -> Task | None:
        """Atomically take the best due task (priority desc, then FIFO), mark it running,
        count the attempt. ``targets`` None takes any task, else untargeted ones and those
        whose target is listed. ``wait`` > 0 waits that long for work (event-driven).
        ``fit``: the claimer's model files and warm checkpoint (see `Fit`)."""

    @abc.abstractmethod
    async def heartbeat(
        self,
        task_id: str,
        owner: str,
        lease_seconds: float,
        progress: dict[str, Any] | None = None,
    ) -> HeartbeatAnswer:
        """Extend the lease (and record progress) if ``owner`` still holds it."""

    @abc.abstractmethod
    async def complete(self, task_id: str, owner: str, result: dict[str, Any]) -> Task:
        """Mark succeeded, progress ``{"stage": "done", "percent": 100.0}``; Conflict unless
        ``owner`` holds the running task."""

    @abc.abstractmethod
    async def fail(
        self,
        task_id: str,
        owner: str,
        error: dict[str, Any],
        *,
        retryable: bool = False,
        backoff_seconds: float = 0.0,
        progress: dict[str, Any] | None = None,
    ) -> Task:
        """Requeue at now + backoff if retryable and attempts remain (progress cleared), else
        failed (cancelled when cancel was requested) with ``progress`` — the agent's last
        report, the stage the attempt stopped in — or, without it, the last heartbeat's.
        Conflict unless ``owner`` holds the running task."""

    @abc.abstractmethod
    async def release(self, task_id: str, owner: str, attempt: int) -> Task:
        """Hand a claimed task back unrun (its prompt never started: the backend went away
        first): queued again in its old place, attempt ``attempt`` uncounted. Conflict unless
        ``owner`` holds it in that attempt."""

    @abc.abstractmethod
    async def cancel(self, task_id: str) -> Task:
        """Queued: cancelled now. Running: cancel_requested (the agent stops and reports via
        `fail`). Finished: Conflict. Unknown: NotFound."""

    @abc.abstractmethod
    async def get(self, task_id: str) -> Task:
        """The task with its webhook deliveries; NotFound if unknown."""

    @abc.abstractmethod
    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        priority: int | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        """Newest first, keyset-paginated by ``cursor``."""

    @abc.abstractmethod
    async def position(self, task_id: str) -> int | None:
        """1 = next to run; None when the task is not queued."""

    @abc.abstractmethod
    async def stats(self) -> QueueStats: ...

    @abc.abstractmethod
    async def queued_models(self) -> builtins.list[tuple[builtins.list[str] | None, int]]:
        """The queued tasks by placement (see `Fit`): each distinct file list, None for tasks
        without, with how many tasks wait with it; one snapshot (the autoscaler's demand)."""

    @abc.abstractmethod
    async def expire_leases(self) -> builtins.list[Task]:
        """Running tasks past their lease go back to queued while attempts remain (else
        failed, or cancelled if requested); past their deadline they fail with code
        ``timeout``. Returns the tasks changed. Run it periodically (the reaper)."""

    @abc.abstractmethod
    async def purge(self, finished_before: datetime) -> int:
        """Delete finished tasks (and their deliveries) older than that; frees their keys."""

    # --- webhook outbox ---------------------------------------------------------------------

    @abc.abstractmethod
    async def due_webhooks(
        self, limit: int = 10, lease_seconds: float = 30.0
    ) -> builtins.list[WebhookDelivery]:
        """Take up to ``limit`` undelivered deliveries that are due; each is pushed
        ``lease_seconds`` ahead (so other replicas skip it) and its attempts counted."""

    @abc.abstractmethod
    async def webhook_delivered(self, delivery_id: int) -> None: ...

    @abc.abstractmethod
    async def webhook_failed(
        self, delivery_id: int, error: str, next_attempt_at: datetime | None
    ) -> None:
        """Record a failed attempt; ``next_attempt_at`` None gives up."""

    # --- waiting (event-driven, never a fixed poll) -------------------------------------------

    @abc.abstractmethod
    async def wait_for_work(self, timeout: float) -> bool:
        """Wait until a task may have become claimable (submit, requeue); False on timeout.
        Prefer ``claim(..., wait=...)``, which closes the claim/wait race."""

    @abc.abstractmethod
    async def wait_finished(
        self, task_id: str, timeout: float, *, current: Task | None = None
    ) -> Task:
        """The task once finished, or as it is when ``timeout`` passes (``?wait=S``).
        ``current``: the task as the caller just got it from this queue (saves a read)."""

    @abc.abstractmethod
    def watch(self, task_id: str, *, idle: float | None = None) -> AsyncIterator[Task]:
        """Yield the task now and after each status/progress change, ending once finished
        (SSE). Changes that land while the consumer is busy are coalesced; with ``idle`` the
        task is yielded again after that many quiet seconds (keep-alives)."""
