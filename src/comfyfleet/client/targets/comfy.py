"""A bare ComfyUI, through comfyfleet's own pipeline (`comfyfleet.execute.execute`) run in this
process: one `comfyfleet.comfy.Client` (one websocket, object_info fetched once) shared by
every job; outputs come back inline. Cancelling a job withdraws or interrupts its prompt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from comfyfleet.client.results import ProgressEvent, Result, from_artifacts
from comfyfleet.client.targets.base import SubmitOptions, Target
from comfyfleet.errors import ComfyFleetError, JobInterrupted, NotFound
from comfyfleet.jobs import JobSpec, Progress

_DONE = object()


class _Job:
    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.latest = ProgressEvent(status="queued", stage="queued")
        self.task: asyncio.Task[Result] | None = None


class ComfyTarget(Target):
    kind = "comfy"
    streams = True

    def __init__(
        self, url: str, *, templates_dir: Path | None = None, ready_timeout: float = 10.0
    ) -> None:
        self.url = url
        self.templates_dir = templates_dir
        self.ready_timeout = ready_timeout
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._jobs: dict[str, _Job] = {}

    async def _comfy(self) -> Any:
        async with self._lock:
            if self._client is None:
                from comfyfleet.comfy import Client

                client = Client(self.url)
                await client.__aenter__()
                try:
                    await client.wait_ready(timeout=self.ready_timeout)
                except BaseException:
                    await client.close()
                    raise
                self._client = client
            return self._client

    async def submit(self, spec: JobSpec, options: SubmitOptions) -> str:
        comfy = await self._comfy()
        job = self._jobs[spec.id] = _Job()
        job.task = asyncio.create_task(self._run(spec, comfy, job), name=f"job {spec.id}")
        return spec.id

    async def _run(self, spec: JobSpec, comfy: Any, job: _Job) -> Result:
        from comfyfleet.execute import execute
        from comfyfleet.outputs.inline import InlineSink

        def on_progress(report: Progress) -> None:
            event = ProgressEvent(
                status="queued" if report.stage == "queued" else "running",
                stage=report.stage,
                node=report.node,
                class_type=report.class_type,
                step=report.value,
                steps=report.max,
                percent=report.percent,
                raw=report.model_dump(mode="json", exclude_none=True),
            )
            job.latest = event
            job.events.put_nowait(event)

        try:
            done = await execute(
                spec, comfy, InlineSink(), on_progress, templates_dir=self.templates_dir
            )
            result = Result(
                id=spec.id,
                status="succeeded",
                outputs=from_artifacts([a.model_dump() for a in done.artifacts]),
                seeds=done.seeds,
                timings=done.timings,
                raw=done.model_dump(mode="json", exclude={"artifacts": {"__all__": {"data"}}}),
            )
        except asyncio.CancelledError:
            result = Result(
                id=spec.id, status="cancelled", error=JobInterrupted(f"job {spec.id} cancelled")
            )
        except ComfyFleetError as exc:
            result = Result(id=spec.id, status="failed", error=exc, raw={"error": exc.to_dict()})
        job.events.put_nowait(result)
        job.events.put_nowait(_DONE)
        return result

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id} was submitted through this client", job=job_id)
        return job

    async def follow(self, job_id: str) -> AsyncIterator[ProgressEvent | Result]:
        job = self._job(job_id)
        while (item := await job.events.get()) is not _DONE:
            yield item

    async def status(self, job_id: str) -> ProgressEvent | Result:
        job = self._job(job_id)
        if job.task is not None and job.task.done():
            return job.task.result()
        return job.latest

    async def cancel(self, job_id: str) -> None:
        job = self._job(job_id)
        if job.task is not None and not job.task.done():
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job.task

    async def aclose(self) -> None:
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
        if self._client is not None:
            await self._client.close()
