"""The agent loop every executor shares: wait until the backend may claim, claim (waiting for
work event-driven), run the task while heartbeating, then complete or fail it.

Where tasks come from (`TaskSource`: the queue in-process, or the gateway over HTTP) and what
runs them (`Runner`: a ComfyUI via `execute`, or a RunPod endpoint) are plugged in, so local,
remote and RunPod agents share one set of failure semantics:

- retryable errors (`ComfyFleetError.retryable`, or anything unexpected) go back to the queue
  with backoff; if the fault was the backend's, the backend turns unhealthy for at least that
  backoff, so the retry lands on another idle backend first;
- non-retryable errors fail the task at once with the precise error;
- the deadline, a cancel request and a lost lease each cancel the running attempt (which
  interrupts exactly our prompt, or removes it from ComfyUI's queue if it is still waiting
  there); a lost lease reports nothing, someone else owns the task now;
- a task whose prompt was still waiting in ComfyUI's queue (prefetched, see `fleet.turn`) when
  that ComfyUI went away never ran: it is handed back (`TaskSource.release`) in its old place,
  without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from comfyfleet.errors import (
    ComfyConnectionLost,
    ComfyError,
    ComfyFleetError,
    ComfyUnavailable,
    Conflict,
    InvalidRequest,
    JobInterrupted,
    JobTimeout,
    ResourceExhausted,
)
from comfyfleet.fleet.backend import Backend, Backoff, claim_while_claimable, claimable
from comfyfleet.fleet.turn import Turn
from comfyfleet.jobs import JobResult, JobSpec, Progress

log = logging.getLogger(__name__)

# Seconds past the deadline before the agent stops waiting for `execute` to time out itself.
DEADLINE_GRACE = 5.0
# Progress makes the agent heartbeat sooner, but never more often than this.
MIN_HEARTBEAT_INTERVAL = 1.0
# How long a stopping agent waits for its interrupted prompt to wind down.
STOP_GRACE = 10.0


@dataclass(slots=True)
class Lease:
    """A claimed task, as an agent sees it."""

    task_id: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    deadline: float  # event-loop time by which this attempt must end
    earlier: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts' errors


@dataclass(frozen=True, slots=True)
class Verdict:
    """A heartbeat's answer."""

    lease_lost: bool = False
    cancel_requested: bool = False


class TaskSource(Protocol):
    """Where an agent gets tasks and reports on them."""

    lease_seconds: float

    async def claim(self, wait: float) -> Lease | None: ...

    async def heartbeat(self, lease: Lease, progress: dict[str, Any] | None) -> Verdict: ...

    async def complete(self, lease: Lease, result: dict[str, Any]) -> None: ...

    async def fail(
        self, lease: Lease, error: dict[str, Any], *, retryable: bool, backoff: float
    ) -> None: ...

    def progress(self, lease: Lease, progress: dict[str, Any]) -> None:
        """Every progress step, as it happens (the in-process events bus)."""

    # Optional: ``async def release(lease, error) -> None`` hands a task that never ran back
    # to the queue without counting the attempt; sources without it fail it (retryable).


class Runner(Protocol):
    """Runs one task's JobSpec somewhere and returns its result."""

    async def run(
        self,
        lease: Lease,
        spec: JobSpec,
        on_progress: Callable[[Progress], None],
        turn: Turn,
    ) -> JobResult:
        """A runner whose backend can take the next task before this one has delivered its
        outputs, or knows whether its prompt started, says so through ``turn`` (see
        `comfyfleet.fleet.turn`); others ignore it."""


def spec_from_payload(payload: dict[str, Any]) -> JobSpec:
    """The JobSpec a task carries: ``payload["spec"]`` (gateway tasks) or the payload itself."""
    data = payload.get("spec", payload) if isinstance(payload, dict) else payload
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"task payload is not a valid JobSpec: {exc}") from exc


def is_backend_fault(error: BaseException) -> bool:
    """Errors that say the backend (not the task, not the gateway) is in trouble."""
    if isinstance(error, ComfyFleetError):
        return error.retryable and isinstance(error, ComfyError | ResourceExhausted)
    return True


def error_body(error: BaseException, backend: str) -> dict[str, Any]:
    """The task's stored error: the precise ComfyFleetError body plus where it happened."""
    if isinstance(error, ComfyFleetError):
        body = error.to_dict()
    else:
        body = {"code": "internal_error", "message": f"{type(error).__name__}: {error}"}
    body["backend"] = backend
    return body


def earlier_errors(error: dict[str, Any] | None, attempt: int) -> list[dict[str, Any]]:
    """The attempt history of a task claimed for ``attempt``: the stored error (that of the
    attempt before) with its number, after the ``earlier`` errors it carries."""
    if not isinstance(error, dict):
        return []
    chain = error.get("earlier")
    head = {k: v for k, v in error.items() if k != "earlier"}
    return [*(chain if isinstance(chain, list) else []), {**head, "attempt": attempt - 1}]


def with_history(body: dict[str, Any], lease: Lease) -> dict[str, Any]:
    """An attempt's error, carrying the errors of the attempts before it (``earlier``)."""
    return {**body, "earlier": lease.earlier} if lease.earlier else body


def never_ran(error: BaseException, turn: Turn) -> bool:
    """The backend went away while our prompt still waited in its queue: it did not run."""
    return turn.waiting and isinstance(error, ComfyConnectionLost | ComfyUnavailable)


class Agent:
    """Claims and runs tasks for one backend: ``backend.capacity`` running and
    ``backend.depth`` more already queued inside it."""

    def __init__(
        self,
        backend: Backend,
        source: TaskSource,
        runner: Runner,
        *,
        retry_backoff: Backoff | None = None,
        claim_wait: float = 30.0,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.backend = backend
        self.source = source
        self.runner = runner
        self.retry_backoff = retry_backoff or Backoff(initial=1.0, maximum=60.0)
        self.claim_wait = claim_wait
        self._heartbeat_interval = heartbeat_interval
        self._cancel: dict[str, asyncio.Event] = {}
        self._slots: list[asyncio.Task[None]] = []
        self._jobs: dict[str, asyncio.Task[None]] = {}  # by task id: running or delivering
        self._claiming = asyncio.Lock()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        for index in range(self.backend.slots):
            name = f"agent:{self.backend.name}:{index}"
            self._slots.append(asyncio.create_task(self._slot(), name=name))

    async def stop(self) -> None:
        """Stop claiming; let tasks that are only delivering outputs finish (for a while),
        interrupt running prompts and hand those tasks back to the queue."""
        self.backend.stop()
        for slot in self._slots:
            slot.cancel()
        delivering = [job for t, job in self._jobs.items() if t in self.backend.delivering]
        if delivering:
            await asyncio.wait(delivering, timeout=STOP_GRACE)
        pending = [*self._slots, *self._jobs.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._slots.clear()

    def cancel(self, task_id: str) -> bool:
        """Interrupt a task this agent runs now; True if it runs here."""
        event = self._cancel.get(task_id)
        if event is None:
            return False
        event.set()
        return True

    @property
    def running(self) -> set[str]:
        return set(self._cancel)

    @property
    def heartbeat_interval(self) -> float:
        """A third of the lease (the source may learn the lease only when it claims)."""
        return self._heartbeat_interval or max(self.source.lease_seconds / 3, 0.05)

    # --- loop ---------------------------------------------------------------------------------
    async def _slot(self) -> None:
        """Claim, start the task, and claim again once its slot is free: when the task has
        ended, or as soon as its prompt is done on ComfyUI (the runner's `Turn`), so
        delivering its outputs and reporting overlap the next prompts."""
        while await self.backend.wait_ready():
            lease = await self._claim()
            if lease is None:
                continue
            freed = asyncio.Event()
            job = asyncio.create_task(self.run_one(lease, freed), name=f"task:{lease.task_id}")
            self._jobs[lease.task_id] = job
            job.add_done_callback(lambda _, task_id=lease.task_id: self._jobs.pop(task_id, None))
            await freed.wait()

    async def _claim(self) -> Lease | None:
        """One slot at a time waits for work: a submit wakes one claim per backend, not one
        per free slot (the others would only find nothing and ask the queue again)."""
        try:
            async with self._claiming:
                if not claimable(self.backend):
                    return None
                lease = claim_while_claimable(self.backend, self.source.claim(self.claim_wait))
                return await lease
        except Exception:
            log.exception("claim on %s failed", self.backend.name)
            self.backend.mark_unhealthy("claim failed")
            return None

    async def run_one(self, lease: Lease, freed: asyncio.Event | None = None) -> None:
        """Run a claimed task to its end and report it; ``freed`` is set once the backend no
        longer needs to be held for it. Never raises (but CancelledError)."""
        backend = self.backend
        freed = freed or asyncio.Event()
        backend.started(lease.task_id)
        cancel = self._cancel[lease.task_id] = asyncio.Event()
        turn = Turn(backend, lease.task_id, freed)
        ok = False
        try:
            ok = await self._run(lease, cancel, turn)
        finally:
            del self._cancel[lease.task_id]
            backend.finished(lease.task_id, ok=ok)
            freed.set()

    async def _run(self, lease: Lease, cancel: asyncio.Event, turn: Turn) -> bool:
        loop = asyncio.get_running_loop()
        try:
            spec = spec_from_payload(lease.payload)
        except InvalidRequest as exc:
            await self._report_failure(lease, exc)
            return False
        remaining = max(lease.deadline - loop.time(), 0.001)
        if spec.timeout is None or spec.timeout > remaining:
            spec = spec.model_copy(update={"timeout": remaining})

        latest: dict[str, Any] = {}
        nudge = asyncio.Event()

        def on_progress(progress: Progress) -> None:
            data = progress.model_dump(mode="json", exclude_none=True)
            latest.clear()
            latest.update(data)
            nudge.set()
            self.source.progress(lease, data)

        attempt = asyncio.create_task(self.runner.run(lease, spec, on_progress, turn))
        try:
            reason = await self._supervise(lease, attempt, cancel, nudge, latest)
        except asyncio.CancelledError:
            await self._abandon(lease, attempt, turn)
            raise
        try:
            result = await attempt
        except asyncio.CancelledError:
            if reason is None:  # we ourselves are being cancelled (stop)
                await self._abandon(lease, attempt, turn)
                raise
            result = None
        except Exception as exc:
            if reason == "lease_lost":
                return False
            error: BaseException = exc
            if reason == "cancelled" and not isinstance(exc, JobInterrupted):
                error = JobInterrupted("cancelled by request")
            if reason is None and never_ran(error, turn):
                await self._hand_back(lease, error)
                return False
            await self._report_failure(lease, error)
            return False
        if reason == "lease_lost":
            log.warning("task %s: lease lost on %s; dropped", lease.task_id, self.backend.name)
            return False
        if reason == "cancelled":
            await self._report_failure(lease, JobInterrupted("cancelled by request"))
            return False
        if reason == "timeout" or result is None:
            await self._report_failure(lease, JobTimeout(timeout=spec.timeout))
            return False
        outcome = result.model_dump(mode="json")
        if lease.earlier:  # a success carries no error; earlier attempts' stay in its history
            outcome["attempt_errors"] = lease.earlier
        await self._report(self.source.complete(lease, outcome), lease)
        return True

    async def _supervise(
        self,
        lease: Lease,
        attempt: asyncio.Task[JobResult],
        cancel: asyncio.Event,
        nudge: asyncio.Event,
        latest: dict[str, Any],
    ) -> str | None:
        """Heartbeat until the attempt ends; cancel it (and say why) on a cancel request, a
        lost lease or the deadline."""
        loop = asyncio.get_running_loop()
        last_beat = last_ok = loop.time()
        reason: str | None = None
        while not attempt.done():
            now = loop.time()
            due = last_beat + self.heartbeat_interval
            if nudge.is_set():
                due = min(due, last_beat + MIN_HEARTBEAT_INTERVAL)
            until = min(due, lease.deadline + DEADLINE_GRACE) - now
            waiters = {attempt, asyncio.ensure_future(cancel.wait())}
            if not nudge.is_set():
                waiters.add(asyncio.ensure_future(nudge.wait()))
            await asyncio.wait(waiters, timeout=max(until, 0), return_when="FIRST_COMPLETED")
            for waiter in waiters - {attempt}:
                waiter.cancel()
            if attempt.done():
                break
            now = loop.time()
            if cancel.is_set():
                reason = "cancelled"
            elif now >= lease.deadline + DEADLINE_GRACE:
                reason = "timeout"
            elif now >= due:
                last_beat = now
                nudge.clear()
                try:
                    verdict = await self.source.heartbeat(lease, dict(latest) or None)
                except Exception as exc:
                    log.warning("task %s: heartbeat failed: %r", lease.task_id, exc)
                    if now - last_ok > self.source.lease_seconds:
                        verdict = Verdict(lease_lost=True)
                    else:
                        continue
                else:
                    last_ok = now
                if verdict.lease_lost:
                    reason = "lease_lost"
                elif verdict.cancel_requested:
                    reason = "cancelled"
            if reason is not None:
                attempt.cancel()
                break
        return reason

    async def _abandon(self, lease: Lease, attempt: asyncio.Task[JobResult], turn: Turn) -> None:
        """The agent is stopping mid-task: interrupt our prompt (or withdraw it from ComfyUI's
        queue), hand the task straight back to the queue (no backoff) so another backend or
        replica takes it now instead of after the lease; a prompt still waiting in ComfyUI's
        queue costs no attempt. Shielded: this runs while the agent's own task is cancelled."""

        async def hand_back() -> None:
            unstarted = turn.waiting
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(attempt, STOP_GRACE)
            error = {
                "code": "agent_stopped",
                "message": "the agent stopped while running the task",
                "backend": self.backend.name,
            }
            release = getattr(self.source, "release", None)
            if unstarted and release is not None:
                await self._report(release(lease, error), lease)
            else:
                fail = self.source.fail(lease, error, retryable=True, backoff=0.0)
                await self._report(fail, lease)

        with contextlib.suppress(BaseException):
            await asyncio.shield(hand_back())

    async def _hand_back(self, lease: Lease, error: BaseException) -> None:
        """The backend went away before our prompt ran: the task goes back in its old place
        with its attempt uncounted; the backend sits out until a health check passes."""
        self.backend.mark_unhealthy(f"{type(error).__name__}: {error}")
        log.warning(
            "task %s: %s went away before its prompt ran; handed back",
            lease.task_id,
            self.backend.name,
        )
        body = error_body(error, self.backend.name)
        release = getattr(self.source, "release", None)
        if release is None:
            call = self.source.fail(lease, body, retryable=True, backoff=0.0)
        else:
            call = release(lease, body)
        await self._report(call, lease)

    async def _report_failure(self, lease: Lease, error: BaseException) -> None:
        retryable = error.retryable if isinstance(error, ComfyFleetError) else True
        backoff = self.retry_backoff.delay(lease.attempt) if retryable else 0.0
        if retryable and is_backend_fault(error):
            # Sit out at least the retry's backoff so another idle backend takes the retry.
            self.backend.mark_unhealthy(
                f"{type(error).__name__}: {error}", recheck_after=backoff + 0.25
            )
        level = logging.WARNING if retryable else logging.INFO
        log.log(level, "task %s failed on %s: %r", lease.task_id, self.backend.name, error)
        body = with_history(error_body(error, self.backend.name), lease)
        await self._report(
            self.source.fail(lease, body, retryable=retryable, backoff=backoff), lease
        )

    async def _report(self, call: Any, lease: Lease) -> None:
        try:
            await call
        except Conflict as exc:
            log.warning("task %s: report refused (%s); lease was lost", lease.task_id, exc)
        except Exception:
            log.exception("task %s: could not report its outcome", lease.task_id)
