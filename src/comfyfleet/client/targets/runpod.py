"""A RunPod serverless endpoint running ``comfyfleet worker`` — in RunPod's cloud (``/run``,
``/status`` polled with backoff, ``/cancel``, or ``/runsync``; the RunPod API key as bearer
token), or the runpod SDK's local API server (``comfyfleet worker --local``, i.e.
``--rp_serve_api``).

The local API differs in two ways the SDK hides: ``/status`` is POST only and its first call
*runs* the job and answers when it is done (a second call would run it again, and after it the
job is forgotten), so this target makes exactly one such call per job and shares its answer;
and it has no ``/cancel``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from comfyfleet.client.results import ProgressEvent, Result, Status, from_worker_output
from comfyfleet.client.targets.base import SubmitOptions, Target
from comfyfleet.client.transport import Transport
from comfyfleet.errors import Conflict, ServiceUnavailable
from comfyfleet.jobs import JobSpec

RUNPOD_API = "https://api.runpod.ai/v2"
STATUSES: dict[str, Status] = {
    "IN_QUEUE": "queued",
    "IN_PROGRESS": "running",
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "failed",
    "CANCELLED": "cancelled",
}


def endpoint_url(endpoint: str) -> str:
    """An endpoint id (or ``runpod://ID``) becomes RunPod's API URL; a URL stays as it is."""
    endpoint = endpoint.strip().rstrip("/").removeprefix("runpod://")
    return endpoint if "://" in endpoint else f"{RUNPOD_API}/{endpoint}"


class RunPodTarget(Target):
    kind = "runpod"

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        local: bool = False,
        sync: bool = False,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        timeout: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = Transport(endpoint_url(endpoint), headers=headers, timeout=timeout)
        self.local = local
        self.kind = "worker" if local else "runpod"
        self.sync = sync
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._final: dict[str, dict[str, Any]] = {}  # answers that were already final
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}  # local API: the one call
        self._submitted: dict[str, dict[str, Any]] = {}  # the /run answer, the first event

    async def submit(self, spec: JobSpec, options: SubmitOptions) -> str:
        body: dict[str, Any] = {"input": spec.model_dump(mode="json", exclude_none=True)}
        if spec.timeout:
            body["policy"] = {"executionTimeout": int(spec.timeout * 1000) + 1000}
        if options.webhook is not None:
            body["webhook"] = options.webhook
        body.update(options.extra)
        path = "/runsync" if self.sync else "/run"
        # No idempotency on RunPod: retried only if the connection was refused.
        answer = await self.http.json("POST", path, json=body, timeout=None if self.sync else 60)
        if not answer.get("id"):
            raise ServiceUnavailable(f"POST {path} answered without a job id: {answer}")
        job_id = str(answer["id"])
        self._submitted[job_id] = answer
        if STATUSES.get(str(answer.get("status"))) in ("succeeded", "failed", "cancelled"):
            self._final[job_id] = answer
        return job_id

    async def _poll(self, job_id: str) -> dict[str, Any]:
        if job_id in self._final:
            return self._final[job_id]
        if self.local:
            call = self._running.get(job_id)
            if call is None:
                call = asyncio.ensure_future(
                    self.http.json("POST", f"/status/{job_id}", timeout=None)
                )
                self._running[job_id] = call
            answer = await asyncio.shield(call)
        else:
            answer = await self.http.json("GET", f"/status/{job_id}", safe=True)
        if STATUSES.get(str(answer.get("status"))) in ("succeeded", "failed", "cancelled"):
            self._final[job_id] = answer
            self._running.pop(job_id, None)
        return answer

    async def follow(self, job_id: str) -> AsyncIterator[ProgressEvent | Result]:
        delay = self.poll_interval
        last: Any = None
        first = self._submitted.get(job_id)
        if first is not None and job_id not in self._final:
            state = self._state(first)
            if isinstance(state, ProgressEvent):
                last = (state.status, state.raw.get("output"))
                yield state
        while True:
            answer = await self._poll(job_id)
            state = self._state(answer)
            if isinstance(state, Result):
                yield state
                return
            if (state.status, state.raw.get("output")) != last:
                last = (state.status, state.raw.get("output"))
                yield state
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.max_poll_interval)

    async def status(self, job_id: str) -> ProgressEvent | Result:
        if self.local and job_id not in self._final:
            call = self._running.get(job_id)
            if call is None and job_id not in self._submitted:
                raise Conflict(
                    f"the runpod SDK's local API cannot report job {job_id} without running it "
                    "(its /status runs the job); wait for its result instead",
                    job=job_id,
                )
            if call is None or not call.done():
                stage = "running" if call is not None else "queued"
                return ProgressEvent(status=stage, stage=stage, raw={"id": job_id})
        return self._state(await self._poll(job_id))

    async def cancel(self, job_id: str) -> None:
        if self.local:
            raise Conflict(
                "the runpod SDK's local API cannot cancel a job (it has no /cancel)", job=job_id
            )
        if job_id not in self._final:
            await self.http.json("POST", f"/cancel/{job_id}")

    async def download(self, url: str, path: Path) -> None:
        await self.http.download(url, path)

    async def aclose(self) -> None:
        for call in self._running.values():
            call.cancel()
        await self.http.aclose()

    def _state(self, answer: dict[str, Any]) -> ProgressEvent | Result:
        status = STATUSES.get(str(answer.get("status")), "running")
        output = answer.get("output")
        if status == "succeeded":
            output = output if isinstance(output, dict) else {}
            summary = output.get("comfyfleet") if isinstance(output.get("comfyfleet"), dict) else {}
            return Result(
                id=str(answer.get("id")),
                status="succeeded",
                outputs=from_worker_output(output),
                seeds=summary.get("seeds") or {},
                timings=summary.get("timings") or {},
                raw=answer,
                _download=self.download,
            )
        if status in ("failed", "cancelled"):
            from comfyfleet.fleet.runpod import error_from_status

            return Result(
                id=str(answer.get("id")),
                status=status,
                error=_refine(error_from_status(answer), answer),
                raw=answer,
                _download=self.download,
            )
        progress = output if isinstance(output, dict) else {}
        return ProgressEvent(
            status=status,
            stage=progress.get("stage", status),
            node=progress.get("node"),
            class_type=progress.get("class_type"),
            step=progress.get("step"),
            steps=progress.get("steps"),
            percent=progress.get("percent"),
            raw=answer,
        )


def _refine(error: Exception, answer: dict[str, Any]) -> Exception:
    """The local API (and RunPod, for a handler's error dict) keeps only the message string;
    the worker's messages start the same way their classes' do, so the class is recovered."""
    from comfyfleet.errors import ComfyError, TemplateNotFound, WorkflowValidationError

    message = answer.get("error")
    if type(error) is not ComfyError or not isinstance(message, str):
        return error
    if message.startswith("workflow is invalid:"):
        return WorkflowValidationError([], message=message)
    if message.startswith("no template named"):
        return TemplateNotFound(message)
    return error
