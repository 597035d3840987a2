"""``/api/v1/tasks/{id}/inputs`` and ``/retry``: what a task was asked to do (for a task page),
and running the same request again as a new task."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request, status
from fastapi.responses import Response

from comfyfleet.errors import Conflict, InvalidRequest
from comfyfleet.gateway.deps import GatewayDep, QueueDep, Reader, Submitter
from comfyfleet.gateway.schemas import ERROR_RESPONSES, TaskOut
from comfyfleet.gateway.views import task_out
from comfyfleet.jobs import new_id

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=ERROR_RESPONSES)


def public_inputs(payload: dict[str, Any]) -> dict[str, Any]:
    """The stored spec with inline image bytes replaced by their length (a page needs to know
    an image was sent, not to download it again) and image and model URLs without query or
    credentials (presigned URLs carry their tokens there)."""
    spec = copy.deepcopy(payload.get("spec") or {})
    for image in spec.get("images") or []:
        source = image.get("image")
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            image["image"] = _bare(source)
        elif isinstance(source, str):
            image["image"] = f"<{len(source)} characters of base64>"
    for model in spec.get("models") or []:
        if isinstance(model.get("url"), str):
            model["url"] = _bare(model["url"])
    return {
        "source": payload.get("source"),
        "workflow_id": payload.get("workflow_id"),
        "retry_of": payload.get("retry_of"),
        "spec": spec,
    }


def _bare(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@router.get("/{task_id}/inputs", summary="What the task was asked to run")
async def task_inputs(task_id: str, queue: QueueDep, _: Reader) -> dict[str, Any]:
    """The task's JobSpec as stored (workflow or template and params, prompt, seed, images
    without their bytes, models) and where it came from."""
    task = await queue.get(task_id)
    return public_inputs(task.payload if isinstance(task.payload, dict) else {})


@router.post(
    "/{task_id}/retry",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskOut,
    summary="Submit a finished task's request again",
    responses={409: {"description": "The task has not finished yet"}},
)
async def retry_task(task_id: str, request: Request, gateway: GatewayDep, _: Submitter) -> Response:
    """A new task (new id) with the same spec, priority, attempts, timeout and webhook; its
    ``inputs.retry_of`` names the original. The original is left as it is."""
    old = await gateway.queue.get(task_id)
    if not old.finished:
        raise Conflict(f"task {task_id} is {old.status}; only a finished task can be retried")
    payload = copy.deepcopy(old.payload) if isinstance(old.payload, dict) else {}
    spec = payload.get("spec")
    if not isinstance(spec, dict):
        raise InvalidRequest(f"task {task_id} has no stored spec to run again")
    spec["id"] = new_id()
    payload.update(spec=spec, retry_of=task_id)
    task, _created = await gateway.queue.submit(
        payload,
        priority=old.priority,
        max_attempts=old.max_attempts,
        timeout_seconds=old.timeout_seconds,
        webhook_url=old.webhook_url,
        task_id=spec["id"],
        models=old.models,
        checkpoint=old.checkpoint,
    )
    gateway.metrics.submitted.labels(str(payload.get("source") or "native")).inc()
    body = task_out(task, str(request.base_url))
    return Response(
        body.model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        headers={"Location": body.links["self"]},
        media_type="application/json",
    )
