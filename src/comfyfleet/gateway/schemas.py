"""Request and response models of the HTTP API.

``POST /api/v1/tasks`` accepts three bodies (told apart by their keys, see `intake`):

- native: a `JobSpec` plus the queue options of `TaskOptions`;
- seed 004's: ``{"workflow_id", "priority", "payload"}`` where ``payload`` is an API-format graph
  (without ``payload``, ``workflow_id`` names a saved template);
- RunPod's: ``{"input": ..., "webhook": ..., "policy": ...}`` where ``input`` is what our RunPod
  worker accepts.

In the native and RunPod bodies, a ``prompt`` that is an object is the API graph (ComfyUI's own
``/prompt`` body, folded into ``workflow`` before these models see it); a string is the text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyfleet.jobs import JobSpec

MAX_PRIORITY = 100


class TaskOptions(BaseModel):
    """How the queue treats a task, whichever body shape carried it."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(
        default=0,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        description="Higher runs first; FIFO within a priority.",
    )
    webhook: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL POSTed (signed) when the task finishes.",
    )
    webhook_progress: bool = Field(
        default=False,
        description="Also POST signed task.progress events to `webhook` while the task runs "
        "(at most one per COMFYFLEET_WEBHOOK_PROGRESS_INTERVAL seconds; best effort).",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Submitting the same request again with this key returns the same task; "
        "another request with it is refused (409).",
    )
    max_attempts: int | None = Field(
        default=None, ge=1, le=20, description="Attempts before failing (default: settings)."
    )


class TaskCreate(TaskOptions, JobSpec):
    """Native body: a JobSpec and the queue options side by side."""

    model_config = ConfigDict(extra="forbid")


class SeedTaskCreate(TaskOptions):
    """Seed 004's body. ``payload`` is an API-format graph; without it, ``workflow_id`` is the
    name of a saved template."""

    workflow_id: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] | None = None
    timeout: float | None = Field(default=None, gt=0)


class RunpodPolicy(BaseModel):
    model_config = ConfigDict(extra="allow")

    executionTimeout: int | None = Field(default=None, gt=0, description="milliseconds")


class RunpodTaskCreate(TaskOptions):
    """RunPod's ``/run`` body; ``input`` is a JobSpec or another input our worker accepts."""

    input: dict[str, Any]
    policy: RunpodPolicy | None = None


# --- responses ------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Delivery(BaseModel):
    id: int
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None


class WebhookInfo(BaseModel):
    url: str
    deliveries: list[Delivery] = Field(default_factory=list)


class TaskOut(BaseModel):
    """A task as clients see it."""

    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    priority: int
    workflow_id: str | None = None
    source: str | None = Field(default=None, description="native, seed or runpod body")
    position: int | None = Field(default=None, description="1 = next to run (queued only)")
    attempts: int
    max_attempts: int
    backend: str | None = None
    cancel_requested: bool = False
    progress: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings: dict[str, float] = Field(
        default_factory=dict, description="queued/run/total seconds plus the pipeline's stages"
    )
    result: dict[str, Any] | None = Field(
        default=None, description="JobResult; artifact URLs are absolute"
    )
    error: dict[str, Any] | None = None
    webhook: WebhookInfo | None = None
    links: dict[str, str] = Field(default_factory=dict)


class TaskPageOut(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None = None
    next: str | None = Field(default=None, description="URL of the next (older) page")


class QueueMetrics(BaseModel):
    """Seed 004's queue metrics, plus what an autoscaler needs."""

    pending_tasks: int
    running_tasks: int
    completed_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    depth_by_priority: dict[str, int]
    oldest_queued_age_seconds: float | None


class WorkerMetrics(BaseModel):
    """Seed 004's worker metrics over the fleet's backends."""

    total_workers: int
    idle_workers: int
    running_workers: int
    starting_workers: int
    failed_workers: int
    draining_workers: int


class ExpiredAgents(BaseModel):
    """Remote agents forgotten after not calling in (``COMFYFLEET_AGENT_EXPIRY_SECONDS``),
    and the tasks they had executed and failed (so totals never go back)."""

    agents: int = 0
    executed: int = 0
    failed: int = 0


class MetricsOut(BaseModel):
    queue: QueueMetrics
    workers: WorkerMetrics
    backends: list[dict[str, Any]]
    expired_agents: ExpiredAgents = Field(default_factory=ExpiredAgents)


# --- OpenAPI --------------------------------------------------------------------------------

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed request (code says which check)"},
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token"},
    403: {"model": ErrorResponse, "description": "The token's role may not do this"},
    404: {"model": ErrorResponse, "description": "Unknown task, artifact or template"},
    409: {"model": ErrorResponse, "description": "The task's state does not allow it"},
    413: {"model": ErrorResponse, "description": "Body larger than max_request_bytes"},
}
BODIES: tuple[type[BaseModel], ...] = (TaskCreate, SeedTaskCreate, RunpodTaskCreate)


def request_body() -> dict[str, Any]:
    """``openapi_extra`` for ``POST /api/v1/tasks``: the body is read raw (413 before parsing,
    one precise error per shape), so its schema is declared here."""
    refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in BODIES]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": refs}}},
        }
    }


def body_schemas() -> dict[str, Any]:
    """Component schemas for `request_body`'s references."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(model, "validation") for model in BODIES],
        ref_template="#/components/schemas/{model}",
    )
    return top.get("$defs", {})


def fit_openapi(schema: dict[str, Any], *, open_gateway: bool) -> dict[str, Any]:
    """Make the generated schema say what this gateway answers, in the mode it runs in.

    Validation errors leave as 400 in the one error shape (FastAPI documents them as 422
    ``HTTPValidationError``), so every operation taking parameters or a body lists 400 instead.
    Every authenticated operation lists the errors any of them can answer (`COMMON_ERRORS`),
    so a route added later is documented too. Without API keys nothing is authenticated: no
    security requirement and no 401 (a caller not on loopback gets 403); with keys every
    protected operation requires the bearer key.
    """
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {})
            if "HTTPValidationError" in str(validation.get("content", "")):
                del responses["422"]
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("400", _error(ERROR_RESPONSES[400]["description"]))
            if not operation.get("security"):
                continue
            for status in COMMON_ERRORS:
                responses.setdefault(str(status), _error(ERROR_RESPONSES[status]["description"]))
            if open_gateway:
                del operation["security"]
                responses.pop("401", None)
                responses["403"] = _error(
                    "This gateway has no API keys and only answers loopback clients"
                )
    components = schema.get("components", {})
    if open_gateway:
        components.pop("securitySchemes", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(unused, None)
    return schema


# What every authenticated operation may answer, whatever it does.
COMMON_ERRORS = (401, 403, 404, 413)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
