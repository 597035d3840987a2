"""A comfyfleet gateway: ``POST /api/v1/tasks`` (with an idempotency key, so a retried submit
never queues twice), progress from its server-sent events, artifacts from its links."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from comfyfleet.client.results import FINAL, ProgressEvent, Result, from_artifacts
from comfyfleet.client.targets.base import SubmitOptions, Target
from comfyfleet.client.transport import Transport, rebuild
from comfyfleet.errors import Conflict, ServiceUnavailable
from comfyfleet.jobs import JobSpec

TASKS = "/api/v1/tasks"


class GatewayTarget(Target):
    kind = "gateway"
    streams = True

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = Transport(url, headers=headers, timeout=timeout)

    async def submit(self, spec: JobSpec, options: SubmitOptions) -> str:
        body: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
        key = options.idempotency_key or spec.id
        body.update({"idempotency_key": key, **options.extra})
        if options.priority is not None:
            body["priority"] = options.priority
        if options.webhook is not None:
            body["webhook"] = options.webhook
        task = await self.http.json("POST", TASKS, json=body, safe=True)
        return str(task["id"])

    async def follow(self, job_id: str) -> AsyncIterator[ProgressEvent | Result]:
        """The task's event stream; reconnected (it replays the current state) if it breaks."""
        sent: set[tuple[str, Any]] = set()  # a resumed stream replays what was already said
        last: dict[str, Any] | None = None
        for attempt in range(self.http.attempts):
            if attempt:
                await asyncio.sleep(min(self.http.backoff * 2**attempt, 5.0))
            try:
                async for name, data in self._events(job_id):
                    if name == "finished":
                        yield self.result(data)
                        return
                    event = _event(name, data)
                    if event is None:
                        continue
                    key = (name, data.get("attempts"), bool(data.get("retry")))
                    if name in ("queued", "started") and key in sent:
                        continue
                    if name == "progress" and data == last:
                        continue
                    sent.add(key)
                    last = data if name == "progress" else last
                    yield event
            except (httpx.TransportError, ServiceUnavailable):
                continue
            break
        while True:  # the stream keeps failing: long-poll the task instead
            task = await self.http.json("GET", f"{TASKS}/{job_id}?wait=300", safe=True)
            if task["status"] in FINAL:
                yield self.result(task)
                return

    async def _events(self, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        url = self.http.url(f"{TASKS}/{job_id}/events")
        timeout = httpx.Timeout(30.0, read=None)
        async with self.http.http.stream(
            "GET", url, headers=self.http.headers, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                from comfyfleet.client.transport import error_from_response

                raise error_from_response(response)
            name, data = "message", []
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif not line and data:
                    yield name, json.loads("\n".join(data))
                    name, data = "message", []

    async def status(self, job_id: str) -> ProgressEvent | Result:
        task = await self.http.json("GET", f"{TASKS}/{job_id}", safe=True)
        if task["status"] in FINAL:
            return self.result(task)
        return _event("progress" if task.get("progress") else task["status"], task)

    async def cancel(self, job_id: str) -> None:
        with contextlib.suppress(Conflict):  # already finished
            await self.http.json("POST", f"{TASKS}/{job_id}/cancel")

    async def download(self, url: str, path: Path) -> None:
        await self.http.download(url, path)

    async def aclose(self) -> None:
        await self.http.aclose()

    def result(self, task: dict[str, Any]) -> Result:
        result = task.get("result") or {}
        error = None
        if task["status"] != "succeeded":
            raw = task.get("error") or {}
            if isinstance(raw, dict):
                message = str(raw.get("message") or f"task {task['status']}")
                error = rebuild(raw.get("code"), message, raw.get("details") or {})
            else:
                error = rebuild(None, str(raw) or f"task {task['status']}", {})
            if task["status"] == "cancelled" and not raw:
                from comfyfleet.errors import JobInterrupted

                error = JobInterrupted(f"task {task['id']} was cancelled")
        return Result(
            id=str(task["id"]),
            status=task["status"],
            outputs=from_artifacts(result.get("artifacts") or []),
            seeds=result.get("seeds") or {},
            timings=task.get("timings") or {},
            error=error,
            raw=task,
            _download=self.download,
        )


def _event(name: str, data: dict[str, Any]) -> ProgressEvent | None:
    if name == "queued":
        return ProgressEvent(status="queued", stage="queued", raw=data)
    if name in ("started", "running"):
        return ProgressEvent(status="running", stage="started", raw=data)
    if name == "progress":
        progress = data.get("progress", data) if "status" in data and "id" in data else data
        return ProgressEvent(
            status="running",
            stage=progress.get("stage"),
            node=progress.get("node"),
            class_type=progress.get("class_type"),
            step=progress.get("value"),
            steps=progress.get("max"),
            percent=progress.get("percent"),
            raw=data,
        )
    return None
