"""The RunPod executor: a `Runner` that forwards a task's JobSpec to a RunPod serverless endpoint
running ``comfyfleet worker`` and maps the answer back to a `JobResult` (or our error).

``POST {base}/run`` then ``/status/{id}`` with backoff (RunPod has no push besides webhooks,
which a gateway behind NAT cannot receive), or ``/runsync`` (which may still answer
``IN_PROGRESS`` for long jobs; then it is polled the same way). Cancelling the attempt posts
``/cancel/{id}``. Inline (base64) artifacts are moved into the gateway's artifact store, so
task results hold URLs, never megabytes of base64. The base URL is ``https://api.runpod.ai/v2/
<endpoint id>`` or any URL serving the same API (the runpod SDK's local test server).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from comfyfleet import errors
from comfyfleet.config import Settings
from comfyfleet.errors import (
    AuthError,
    ComfyError,
    ComfyFleetError,
    ComfyUnavailable,
    JobInterrupted,
    JobTimeout,
)
from comfyfleet.fleet.agent import Lease
from comfyfleet.fleet.backend import Backoff
from comfyfleet.fleet.local import SinkFactory
from comfyfleet.fleet.turn import Turn
from comfyfleet.jobs import Artifact, JobResult, JobSpec, Progress

RUNPOD_API = "https://api.runpod.ai/v2"
PENDING = frozenset({"IN_QUEUE", "IN_PROGRESS"})
RESULT_KEY = "comfyfleet"  # the worker's full result rides under this output key
_KIND_KEYS = {"image": "images", "video": "videos", "audio": "audio", "file": "files"}


def endpoint_url(endpoint: str) -> str:
    """An endpoint id becomes RunPod's API URL; a URL is used as it is."""
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if "://" in endpoint else f"{RUNPOD_API}/{endpoint}"


def _error_classes() -> dict[str, type[ComfyFleetError]]:
    found: dict[str, type[ComfyFleetError]] = {}
    todo: list[type[ComfyFleetError]] = [ComfyFleetError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def rebuild_error(code: str | None, message: str, details: dict[str, Any]) -> ComfyFleetError:
    """Our error class for a code the worker reported; ComfyError for unknown codes."""
    cls = _error_classes().get(code or "", ComfyError)
    error = cls.__new__(cls)
    ComfyFleetError.__init__(error, message, **details)
    if cls is errors.WorkflowValidationError:
        error.node_errors = details.get("node_errors", [])  # type: ignore[attr-defined]
    return error


def error_from_status(body: dict[str, Any]) -> ComfyFleetError:
    """A FAILED/CANCELLED/TIMED_OUT status as our error (keeping the worker's code when the
    status carries it, so a retryable failure stays retryable)."""
    status = body.get("status")
    if status == "TIMED_OUT":
        return JobTimeout("the RunPod job ran past its execution timeout", runpod_id=body.get("id"))
    if status == "CANCELLED":
        return JobInterrupted("the RunPod job was cancelled", runpod_id=body.get("id"))
    raw = body.get("error")
    output = body.get("output") if isinstance(body.get("output"), dict) else {}
    details: dict[str, Any] = {
        k: v for k, v in output.items() if k not in ("error", "code", "retryable", RESULT_KEY)
    }
    code = output.get("code")
    message = raw if isinstance(raw, str) else json.dumps(raw) if raw else "RunPod job failed"
    if isinstance(raw, dict):
        code, message = raw.get("code", code), raw.get("message", message)
        details.update(raw.get("details") or {})
    elif isinstance(raw, str) and raw.startswith("{"):
        with contextlib.suppress(ValueError):
            crash = json.loads(raw)
            if isinstance(crash, dict) and "error_message" in crash:
                # The handler itself raised (the SDK's capture): the worker is in trouble.
                return ComfyUnavailable(
                    f"the RunPod worker crashed: {crash.get('error_type')}: "
                    f"{crash['error_message']}",
                    runpod_id=body.get("id"),
                )
    details["runpod_id"] = body.get("id")
    return rebuild_error(code, message, details)


class RunPodRunner:
    """Runs JobSpecs on one RunPod endpoint; many at once (the endpoint scales)."""

    def __init__(
        self,
        base_url: str,
        sink_for: SinkFactory,
        *,
        api_key: str | None = None,
        sync: bool = False,
        poll: Backoff | None = None,
        name: str | None = None,
    ) -> None:
        self.base_url = endpoint_url(base_url)
        self.name = name or "runpod:" + self.base_url.rsplit("/", 1)[-1]
        self.sink_for = sink_for
        self.sync = sync
        self.poll = poll or Backoff(initial=0.2, factor=1.5, maximum=5.0, jitter=0.0)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._status_method = "GET"  # RunPod's API; the SDK's local server only takes POST
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, sink_for: SinkFactory) -> RunPodRunner:
        assert settings.runpod_endpoint
        return cls(
            settings.runpod_endpoint,
            sink_for,
            api_key=settings.runpod_api_key,
            sync=settings.runpod_sync,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self, method: str, path: str, *, timeout: float | None = 30.0, **kw: Any
    ) -> tuple[int, Any]:
        try:
            async with self.session.request(
                method, self.base_url + path, timeout=aiohttp.ClientTimeout(total=timeout), **kw
            ) as resp:
                text = await resp.text()
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    body = text
                return resp.status, body
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ComfyUnavailable(
                f"RunPod endpoint {self.base_url} is unreachable: {exc!r}", path=path
            ) from exc

    def _check(self, status: int, body: Any, what: str) -> dict[str, Any]:
        if status in (401, 403):
            raise AuthError(f"RunPod refused {what}: HTTP {status} (check the API key)")
        if status >= 500 or status == 429:
            raise ComfyUnavailable(f"RunPod answered {what} with HTTP {status}")
        if status >= 400 or not isinstance(body, dict):
            raise ComfyError(f"RunPod answered {what} with HTTP {status}: {str(body)[:300]}")
        return body

    async def health(self) -> None:
        """The endpoint answers (``/health`` on RunPod; the local server has none: 404 is
        fine there) and accepts our key."""
        status, _ = await self._call("GET", "/health", timeout=10.0)
        if status in (401, 403) or status >= 500:
            self._check(status, None, "GET /health")

    async def run(
        self,
        lease: Lease,
        spec: JobSpec,
        on_progress: Callable[[Progress], None],
        turn: Turn,
    ) -> JobResult:
        body: dict[str, Any] = {"input": spec.model_dump(mode="json", exclude_none=True)}
        if spec.timeout:
            body["policy"] = {"executionTimeout": int(spec.timeout * 1000) + 1000}
        path = "/runsync" if self.sync else "/run"
        started = time.monotonic()
        answer = self._check(
            *await self._call("POST", path, json=body, timeout=spec.timeout), f"POST {path}"
        )
        job_id = answer.get("id")
        try:
            if answer.get("status") in (None, *PENDING):
                if not job_id:
                    raise ComfyError(f"RunPod answered POST {path} without a job id")
                answer = await self._follow(str(job_id), spec, on_progress)
        except asyncio.CancelledError:
            if job_id:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._call("POST", f"/cancel/{job_id}", timeout=10.0))
            raise
        if answer.get("status") != "COMPLETED":
            raise error_from_status(answer)
        result = await self._result(lease.task_id, spec, answer.get("output"))
        result.timings.setdefault("runpod", round(time.monotonic() - started, 4))
        return result

    async def _follow(
        self, job_id: str, spec: JobSpec, on_progress: Callable[[Progress], None]
    ) -> dict[str, Any]:
        """Poll ``/status`` with backoff until the job is final."""
        polls = 0
        while True:
            method = self._status_method
            status, body = await self._call(method, f"/status/{job_id}", timeout=spec.timeout)
            if status == 405 and method == "GET":
                self._status_method = "POST"
                continue
            answer = self._check(status, body, "status")
            if answer.get("status") not in PENDING:
                return answer
            output = answer.get("output")
            if output is not None:
                on_progress(_progress(spec.id, output))
            polls += 1
            await asyncio.sleep(self.poll.delay(polls))

    async def _result(self, task_id: str, spec: JobSpec, output: Any) -> JobResult:
        """The worker's output as a JobResult, inline bytes moved into the artifact store."""
        if not isinstance(output, dict):
            return JobResult(job_id=spec.id, timings={}, artifacts=[])
        if isinstance(output.get(RESULT_KEY), dict):
            result = JobResult.model_validate(output[RESULT_KEY])
        else:
            result = JobResult(job_id=spec.id)
            for kind, key in _KIND_KEYS.items():
                for item in output.get(key) or []:
                    name = str(item.get("filename", "output"))
                    result.artifacts.append(Artifact(node_id="", filename=name, kind=kind))  # type: ignore[arg-type]
        entries = {key: list(output.get(key) or []) for key in _KIND_KEYS.values()}
        sink = self.sink_for(task_id)
        artifacts = []
        for artifact in result.artifacts:
            pending = entries.get(_KIND_KEYS.get(artifact.kind, "files"), [])
            entry = pending.pop(0) if pending else {}
            kind, data = entry.get("type"), entry.get("data")
            if kind == "base64" and isinstance(data, str):
                artifact = await sink.store(artifact, _decoded(data))
            elif kind == "s3_url" and data:
                artifact = artifact.model_copy(update={"url": data})
            artifacts.append(artifact)
        return result.model_copy(update={"artifacts": artifacts})


async def _decoded(data: str, chunk: int = 2**20) -> AsyncIterator[bytes]:
    raw = base64.b64decode(data)
    for start in range(0, len(raw), chunk):
        yield raw[start : start + chunk]


def _progress(job_id: str, output: Any) -> Progress:
    if isinstance(output, dict):
        known = {k: v for k, v in output.items() if k in Progress.model_fields and k != "job_id"}
        try:
            return Progress(job_id=job_id, **known)
        except ValueError:
            pass
    return Progress(job_id=job_id, stage="running", message=str(output)[:500])
