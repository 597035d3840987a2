"""``/api/v1/tasks``: submit, read, list, cancel and follow tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from comfyfleet.gateway import sse
from comfyfleet.gateway.deps import GatewayDep, QueueDep, Reader, Submitter
from comfyfleet.gateway.intake import decode_json, parse_submission, request_fingerprint
from comfyfleet.gateway.schemas import (
    ERROR_RESPONSES,
    ErrorResponse,
    TaskOut,
    TaskPageOut,
    request_body,
)
from comfyfleet.gateway.views import task_out
from comfyfleet.queue import Task, TaskStatus

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=ERROR_RESPONSES)

MAX_WAIT = 300.0
Wait = Annotated[
    float | None,
    Query(ge=0, le=MAX_WAIT, description="Wait up to this many seconds for the task to finish."),
]


async def existing_task(task_id: str, queue: QueueDep) -> Task:
    """The task, or 404 (as a dependency, so it is answered before a stream starts)."""
    return await queue.get(task_id)


def _base(request: Request) -> str:
    return str(request.base_url)


async def _out(queue: Any, task: Task, request: Request) -> TaskOut:
    position = await queue.position(task.id) if task.status == "queued" else None
    return task_out(task, _base(request), position=position)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskOut,
    summary="Submit a task",
    openapi_extra=request_body(),
    responses={
        200: {"description": "Finished within ?wait, or an idempotent replay", "model": TaskOut},
        202: {"description": "Still queued or running after ?wait", "model": TaskOut},
        409: {
            "description": "The Idempotency-Key was used for another request, or the id exists",
            "model": ErrorResponse,
        },
        422: {
            "description": "The workflow is invalid against every known node catalogue",
            "model": ErrorResponse,
        },
    },
)
async def create_task(
    request: Request,
    gateway: GatewayDep,
    _: Submitter,
    wait: Wait = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    """Accepts a native JobSpec body, seed 004's ``{workflow_id, priority, payload}`` or
    RunPod's ``{input, webhook, policy}``. Everything is validated before the task is written,
    so a 4xx never leaves a task behind."""
    settings = gateway.settings
    data = decode_json(await request.body())
    submission = parse_submission(
        data,
        templates_dir=settings.templates_dir,
        default_template=settings.default_template,
        catalogues=gateway.fleet.catalogues(),
        allow_private_urls=settings.allow_private_urls,
    )
    options = submission.options
    key = options.idempotency_key or idempotency_key
    task, created = await gateway.queue.submit(
        submission.payload(),
        priority=options.priority,
        idempotency_key=key,
        fingerprint=request_fingerprint(data) if key else None,
        max_attempts=options.max_attempts or settings.max_attempts,
        timeout_seconds=submission.spec.timeout or settings.job_timeout,
        webhook_url=options.webhook,
        task_id=submission.spec.id,
        models=submission.models,
        checkpoint=submission.checkpoint,
    )
    code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    if created:
        gateway.metrics.submitted.labels(submission.source).inc()
    if wait:
        task = await gateway.queue.wait_finished(task.id, wait, current=task)
        code = status.HTTP_200_OK if task.finished else status.HTTP_202_ACCEPTED
    body = await _out(gateway.queue, task, request)
    headers = {"Location": body.links["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    # (pydantic's own serializer: the same JSON as GET, without jsonable_encoder's walk)
    return Response(
        body.model_dump_json(), status_code=code, headers=headers, media_type="application/json"
    )


@router.get("", response_model=TaskPageOut, summary="List tasks, newest first")
async def list_tasks(
    request: Request,
    queue: QueueDep,
    _: Reader,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    priority: int | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> TaskPageOut:
    page = await queue.list(
        status=status_,
        priority=priority,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    base = _base(request)
    next_url = None
    if page.next_cursor is not None:
        next_url = str(request.url.include_query_params(cursor=page.next_cursor))
    return TaskPageOut(
        items=[task_out(task, base) for task in page.items],
        next_cursor=page.next_cursor,
        next=next_url,
    )


@router.get("/{task_id}", response_model=TaskOut, summary="A task's status and result")
async def get_task(
    task_id: str, request: Request, queue: QueueDep, _: Reader, wait: Wait = None
) -> TaskOut:
    """With ``?wait=S``, answers as soon as the task finishes or after S seconds."""
    task = await (queue.wait_finished(task_id, wait) if wait else queue.get(task_id))
    return await _out(queue, task, request)


@router.post("/{task_id}/cancel", response_model=TaskOut, summary="Cancel a task")
async def cancel_task(task_id: str, request: Request, gateway: GatewayDep, _: Submitter) -> TaskOut:
    """A queued task never runs; a running one is interrupted (only its own prompt). 409 if
    it already finished."""
    await gateway.fleet.cancel(task_id)
    return await _out(gateway.queue, await gateway.queue.get(task_id), request)


@router.get(
    "/{task_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a task as server-sent events",
)
async def task_events(
    task_id: str,
    request: Request,
    gateway: GatewayDep,
    _: Reader,
    _task: Annotated[Task, Depends(existing_task)],  # after auth: 404 before streaming
) -> AsyncIterator[ServerSentEvent]:
    """Events: ``queued``, ``started``, ``progress``, ``artifacts``, ``finished``. The current
    state is replayed first; the stream ends after ``finished``."""
    base = _base(request)

    def present(task: Task) -> dict[str, Any]:
        return jsonable_encoder(task_out(task, base))

    events = sse.task_events(gateway.queue, gateway.events, task_id, present)
    number = 0
    async for name, data in events:
        number += 1
        yield ServerSentEvent(event=name, data=data, id=str(number))
