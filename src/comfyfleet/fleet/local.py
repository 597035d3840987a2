"""Local agents: the gateway's own queue as task source, one ComfyUI as the runner.

`QueueSource` claims straight from the queue (``claim(wait=...)`` wakes on submit and on a
retry coming due, never a fixed poll) and publishes every step to the in-process events bus.
`ComfyRunner` runs a JobSpec through `execute` against one ComfyUI with the artifacts sink; the
remote agent process uses it too. Before the prompt it puts the files the job asks for
(``JobSpec.models``) under this process's model root, as the RunPod worker does (`JobModels`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfleet.config import Settings
from comfyfleet.errors import Conflict
from comfyfleet.fleet.agent import Lease, Verdict, earlier_errors
from comfyfleet.fleet.events import TaskEvents
from comfyfleet.fleet.placement import files_of
from comfyfleet.fleet.turn import Turn
from comfyfleet.jobs import JobResult, JobSpec, Progress
from comfyfleet.outputs.sink import Sink
from comfyfleet.queue.base import Fit, Queue, Task

if TYPE_CHECKING:
    from comfyfleet.models.jobmodels import JobModels

log = logging.getLogger(__name__)

SinkFactory = Callable[[str], Sink]


def seconds_left(task: Task, queue: Queue, default: float) -> float:
    """Time this attempt may still run: to the queue's deadline, else ``default``."""
    if task.deadline_at is None:
        return task.timeout_seconds or default
    return (task.deadline_at - queue.clock()).total_seconds()


def status_event(task: Task, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "status",
        "task_id": task.id,
        "status": task.status,
        "attempts": task.attempts,
        "backend": task.backend,
    }
    if task.error is not None and task.status != "succeeded":
        event["error"] = task.error
    payload = task.payload if isinstance(task.payload, dict) else {}
    if task.status == "running" and task.webhook_url and payload.get("webhook_progress"):
        event["progress_webhook"] = task.webhook_url  # the gateway's ProgressWebhooks
    if task.finished and task.webhook_url:
        event["webhook"] = True  # its final webhook is due now (the gateway's deliverer)
    event.update(extra)
    return event


class QueueSource:
    """Claims from the queue in this process; reports there and on the events bus.

    With ``catalogue`` (the backend's cached object_info, or None while unknown) it claims
    model-aware: tasks whose model files the backend lists, and first those loading the
    checkpoint it ran last (`Fit`, see docs/fleet.md "Model-aware placement")."""

    def __init__(
        self,
        queue: Queue,
        *,
        owner: str,
        backend: str,
        lease_seconds: float,
        job_timeout: float,
        events: TaskEvents | None = None,
        targets: Collection[str] | None = None,
        catalogue: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.queue = queue
        self.owner = owner
        self.backend = backend
        self.lease_seconds = lease_seconds
        self.job_timeout = job_timeout
        self.events = events
        self.targets = targets
        self.catalogue = catalogue
        self.warm: str | None = None  # the checkpoint of the task claimed last
        self._fit: Fit | None = None
        self._files: tuple[dict[str, Any], frozenset[str]] | None = None  # catalogue's files
        # Each running task's latest step: heartbeats record progress at their own rate, a
        # failure records the stage the attempt really stopped in.
        self._latest: dict[str, dict[str, Any]] = {}

    async def claim(self, wait: float) -> Lease | None:
        task = await self.queue.claim(
            self.owner,
            self.lease_seconds,
            backend=self.backend,
            targets=self.targets,
            wait=wait,
            fit=self.fit(),
        )
        if task is None:
            return None
        if task.checkpoint is not None:
            self.warm = task.checkpoint
        log.debug("%s claimed %s (attempt %d)", self.backend, task.id, task.attempts)
        left = seconds_left(task, self.queue, self.job_timeout)
        self._publish(task)
        return Lease(
            task_id=task.id,
            payload=task.payload,
            attempt=task.attempts,
            max_attempts=task.max_attempts,
            deadline=asyncio.get_running_loop().time() + left,
            earlier=earlier_errors(task.error, task.attempts),
        )

    def fit(self) -> Fit | None:
        """What this backend runs well now: its files (from its cached catalogue) and its
        warm checkpoint; the same object while neither changes (the queue caches its
        encoding)."""
        info = self.catalogue() if self.catalogue is not None else None
        have = None
        if info is not None:
            if self._files is None or self._files[0] is not info:
                self._files = (info, files_of(info))
            have = self._files[1]
        if have is None and self.warm is None:
            return None
        fit = self._fit
        if fit is None or fit.have is not have or fit.warm != self.warm:
            fit = self._fit = Fit(have=have, warm=self.warm)
        return fit

    async def heartbeat(self, lease: Lease, progress: dict[str, Any] | None) -> Verdict:
        answer = await self.queue.heartbeat(lease.task_id, self.owner, self.lease_seconds, progress)
        if answer.lease_lost:
            self._latest.pop(lease.task_id, None)
        return Verdict(lease_lost=answer.lease_lost, cancel_requested=answer.cancel_requested)

    async def complete(self, lease: Lease, result: dict[str, Any]) -> None:
        self._latest.pop(lease.task_id, None)
        self._publish(await self.queue.complete(lease.task_id, self.owner, result))

    async def fail(
        self, lease: Lease, error: dict[str, Any], *, retryable: bool, backoff: float
    ) -> None:
        task = await self.queue.fail(
            lease.task_id,
            self.owner,
            error,
            retryable=retryable,
            backoff_seconds=backoff,
            progress=self._latest.pop(lease.task_id, None),
        )
        self._publish(task)

    async def release(self, lease: Lease, error: dict[str, Any]) -> None:
        """The task never ran here: back to the queue in its old place, attempt uncounted."""
        self._latest.pop(lease.task_id, None)
        task = await self.queue.release(lease.task_id, self.owner, lease.attempt)
        log.info("%s handed back %s unrun (%s)", self.backend, task.id, error.get("message"))
        if task.cancel_requested:  # cancelled meanwhile: it never runs now
            with contextlib.suppress(Conflict):
                task = await self.queue.cancel(task.id)
        self._publish(task)

    def progress(self, lease: Lease, progress: dict[str, Any]) -> None:
        self._latest[lease.task_id] = progress
        if self.events is not None:
            self.events.publish(lease.task_id, {"type": "progress", **progress})

    def _publish(self, task: Task) -> None:
        if self.events is not None:
            self.events.publish(task.id, status_event(task))


class ComfyRunner:
    """Runs JobSpecs on one ComfyUI through the shared pipeline, after fetching the model files
    a job asks for through ``models`` (shared by the runners of one process)."""

    def __init__(
        self,
        client: Any,
        sink_for: SinkFactory,
        *,
        templates_dir: Path | None = None,
        input_dir: Path | None = None,
        output_dir: Path | None = None,
        settings: Settings | None = None,
        models: JobModels,
    ) -> None:
        self.client = client
        self.settings = settings
        self.models = models
        self.sink_for = sink_for
        self.templates_dir = templates_dir
        self.input_dir = input_dir
        self.output_dir = output_dir

    async def run(
        self,
        lease: Lease,
        spec: JobSpec,
        on_progress: Callable[[Progress], None],
        turn: Turn,
    ) -> JobResult:
        from comfyfleet.execute import execute

        async with self.models.provide(spec) as paths:  # fails at once without a model root
            await self.models.refresh_catalogue(self.client, paths)
            return await execute(
                spec,
                _TurnClient(self.client, turn),
                self.sink_for(lease.task_id),
                on_progress,
                templates_dir=self.templates_dir,
                input_dir=self.input_dir,
                output_dir=self.output_dir,
                settings=self.settings,
            )

    async def health(self) -> None:
        await self.client.system_stats()
        if self.catalogue() is None:  # once, so the gateway can check workflows at submit
            try:
                await self.client.object_info()
            except Exception as exc:  # the backend is up; jobs fetch it again when they run
                log.warning("fetching object_info failed: %r", exc)

    def catalogue(self) -> dict[str, Any] | None:
        """This ComfyUI's object_info if already fetched (no request)."""
        info = getattr(self.client, "cached_object_info", None)
        return info if isinstance(info, dict) else None


class _TurnClient:
    """The ComfyUI client as `execute` sees it, telling the task's `Turn` when our prompt is
    in ComfyUI's queue, whether it started there, and when it is done there (``wait``
    returned): from then on only our delivery remains and the slot can take the next task.
    (Progress stages from `execute` marking those moments would make this wrapper
    unnecessary.)"""

    def __init__(self, client: Any, turn: Turn) -> None:
        self._client = client
        self._turn = turn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        prompt_id = await self._client.submit(*args, **kwargs)
        self._turn.prompt_submitted()
        return prompt_id

    async def wait(self, prompt_id: str, *args: Any, **kwargs: Any) -> Any:
        watch = self._client.events.get(prompt_id)
        try:
            entry = await self._client.wait(prompt_id, *args, **kwargs)
        except BaseException:
            self._turn.started = watch is None or watch.started
            self._turn.release()
            raise
        self._turn.prompt_done()
        return entry
