"""``/api/v1/agent``: the pull protocol of remote agents (``comfyfleet agent``), role ``agent``.

An agent identifies itself in every call by ``name`` (its backend's name, stable across
restarts) and ``agent_id`` (one per process); together they are the task's lease owner, so a
restarted agent can never report for a task its previous incarnation held. Claims long-poll:
``?wait=S`` holds the request until a task is claimable (the queue's wake-ups) or S passes
(204). A drained agent's claims wait for the undrain instead of taking work. Only a claim
registers an agent (`Fleet.remote`), and so does a report the queue accepts (the lease proves
it); a call for a task the agent does not hold creates nothing, so no phantom workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from comfyfleet.errors import Conflict, InvalidRequest
from comfyfleet.fleet.backend import claim_while_claimable
from comfyfleet.fleet.local import seconds_left, status_event
from comfyfleet.gateway.deps import AgentKey, GatewayDep
from comfyfleet.gateway.schemas import ERROR_RESPONSES
from comfyfleet.jobs import Artifact, ArtifactKind
from comfyfleet.outputs.artifacts import is_safe_segment
from comfyfleet.queue import Task

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/agent", tags=["agents"], responses=ERROR_RESPONSES)

MAX_WAIT = 60.0
MAX_BACKOFF = 3600.0
NAME_PATTERN = r"^[A-Za-z0-9][\w.:@-]*$"
AGENT_ID_PATTERN = r"^[\w-]+$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
AgentId = Annotated[str, Field(min_length=1, max_length=100, pattern=AGENT_ID_PATTERN)]


class AgentIdent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: AgentId
    name: Name


class HeartbeatIn(AgentIdent):
    progress: dict[str, Any] | None = None


class CompleteIn(AgentIdent):
    result: dict[str, Any]


class FailIn(AgentIdent):
    error: dict[str, Any]
    retryable: bool = False
    backoff: float = Field(default=0.0, ge=0, le=MAX_BACKOFF)


class ClaimOut(BaseModel):
    task_id: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    seconds_left: float = Field(description="until this attempt's deadline")
    lease_seconds: float


class HeartbeatOut(BaseModel):
    lease_lost: bool
    cancel_requested: bool


async def _disconnect(request: Request) -> None:
    """Returns once the client has hung up (the body is already read, so only
    ``http.disconnect`` can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def owner_of(ident: AgentIdent) -> str:
    return f"remote:{ident.name}:{ident.agent_id}"


@router.post(
    "/claim",
    response_model=ClaimOut,
    responses={204: {"description": "No task within ?wait (or the agent is drained)"}},
    summary="Claim the next task (long-poll)",
)
async def claim(
    body: AgentIdent,
    request: Request,
    gateway: GatewayDep,
    _: AgentKey,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
) -> Any:
    backend = gateway.fleet.remote(body.name)
    settings = gateway.settings
    queue = gateway.queue
    owner = owner_of(body)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait

    async def poll() -> Task | None:
        if backend.draining:
            await backend.changed(wait)  # hold the poll; an undrain answers at once
            if backend.draining:
                return None
        left = max(0.0, give_up - loop.time())
        claim = queue.claim(owner, settings.lease_seconds, backend=body.name, wait=left)
        return await claim_while_claimable(backend, claim)

    claim_task = asyncio.ensure_future(poll())
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        # An agent that hangs up (SIGTERM, network) must not leave its long-poll behind.
        await asyncio.wait({claim_task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not claim_task.done():
            claim_task.cancel()
    task = None
    with contextlib.suppress(asyncio.CancelledError):
        task = await claim_task
    if task is None:
        return Response(status_code=204)
    if await request.is_disconnected():
        # The agent gave up on this poll; hand the task straight back for someone else.
        error = {"code": "agent_gone", "message": "the agent left before receiving the task"}
        await queue.fail(task.id, owner, error, retryable=True)
        return Response(status_code=204)
    backend.started(task.id)
    gateway.events.publish(task.id, status_event(task))
    return ClaimOut(
        task_id=task.id,
        payload=task.payload,
        attempt=task.attempts,
        max_attempts=task.max_attempts,
        seconds_left=seconds_left(task, queue, settings.job_timeout),
        lease_seconds=settings.lease_seconds,
    )


@router.post("/tasks/{task_id}/heartbeat", response_model=HeartbeatOut, summary="Heartbeat")
async def heartbeat(
    task_id: str, body: HeartbeatIn, gateway: GatewayDep, _: AgentKey
) -> HeartbeatOut:
    answer = await gateway.queue.heartbeat(
        task_id, owner_of(body), gateway.settings.lease_seconds, body.progress
    )
    if answer.lease_lost:  # not this agent's task (any more): nothing to register
        backend = gateway.fleet.known_remote(body.name)
        if backend is not None:
            backend.running.discard(task_id)
    else:  # it holds the lease: a real agent (also one that claimed before a restart)
        gateway.fleet.remote(body.name)
        if body.progress:
            gateway.events.publish(task_id, {"type": "progress", **body.progress})
    return HeartbeatOut(lease_lost=answer.lease_lost, cancel_requested=answer.cancel_requested)


@router.put("/tasks/{task_id}/artifacts/{name}", response_model=Artifact, summary="Upload")
async def upload_artifact(
    task_id: str,
    name: str,
    request: Request,
    gateway: GatewayDep,
    _: AgentKey,
    agent_id: Annotated[str, Query(min_length=1, max_length=100, pattern=AGENT_ID_PATTERN)],
    agent_name: Annotated[str, Query(min_length=1, max_length=200, pattern=NAME_PATTERN)],
    node_id: str = "",
    subfolder: str = "",
    type: str = "output",
    kind: ArtifactKind = "file",
    media_type: str = "application/octet-stream",
) -> Artifact:
    """The body is the artifact's bytes, streamed into the artifact store as they arrive."""
    if not is_safe_segment(task_id):
        raise InvalidRequest("bad task id", task_id=task_id)
    owner = owner_of(AgentIdent(agent_id=agent_id, name=agent_name))
    task = await gateway.queue.get(task_id)
    if task.status != "running" or task.lease_owner != owner:
        raise Conflict(
            f"task {task_id} is {task.status} and not leased to this agent", task_id=task_id
        )
    artifact = Artifact(
        node_id=node_id,
        filename=name,
        subfolder=subfolder,
        type=type,
        kind=kind,
        media_type=request.headers.get("content-type", media_type),
    )
    return await gateway.artifacts.sink(task_id).store(artifact, request.stream())


@router.post("/tasks/{task_id}/complete", summary="Report success")
async def complete(task_id: str, body: CompleteIn, gateway: GatewayDep, _: AgentKey) -> Any:
    task = await gateway.queue.complete(task_id, owner_of(body), body.result)
    _finished(gateway, body.name, task, ok=True)
    return {"status": task.status}


@router.post("/tasks/{task_id}/fail", summary="Report failure")
async def fail(task_id: str, body: FailIn, gateway: GatewayDep, _: AgentKey) -> Any:
    task = await gateway.queue.fail(
        task_id,
        owner_of(body),
        body.error,
        retryable=body.retryable,
        backoff_seconds=body.backoff,
    )
    _finished(gateway, body.name, task, ok=False)
    return {"status": task.status}


def _finished(gateway: Any, name: str, task: Any, *, ok: bool) -> None:
    backend = gateway.fleet.remote(name)  # the queue accepted its report: a real agent
    if task.id in backend.running:
        backend.finished(task.id, ok=ok)
    gateway.events.publish(task.id, status_event(task))
