"""From a POST body to a validated submission, before anything touches the queue.

Every check that can reject a request runs here (body shape, template name, webhook URL, an
inline workflow against the node catalogues of the backends known so far), so a
4xx never leaves a half-created task behind. The three accepted shapes are told apart by their
keys: ``input`` is RunPod's, ``workflow_id``/``payload`` is seed 004's, anything else is native.
In the native and RunPod bodies a ``prompt`` that is an object is the API graph (ComfyUI's own
``/prompt`` body); a string stays the text prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from comfyfleet.errors import (
    InvalidRequest,
    TemplateNotFound,
    WorkflowValidationError,
)
from comfyfleet.fleet.placement import placement
from comfyfleet.gateway.schemas import RunpodTaskCreate, SeedTaskCreate, TaskCreate, TaskOptions
from comfyfleet.jobs import JobSpec, new_id
from comfyfleet.outputs.artifacts import is_safe_segment
from comfyfleet.urls import check_url, looks_like_url
from comfyfleet.worker.formats import fold_graph_prompt

Source = Literal["native", "seed", "runpod"]
_OPTION_FIELDS = set(TaskOptions.model_fields)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Submission:
    spec: JobSpec
    options: TaskOptions
    source: Source
    workflow_id: str | None = None
    # Placement (fleet.placement): the model files a backend must have to take the task (empty
    # when none, or when no backend known now has them all) and its warm checkpoint.
    models: tuple[str, ...] = ()
    checkpoint: str | None = None

    def payload(self) -> dict[str, Any]:
        """What the queue stores: the spec, plus where it came from (and, when asked for,
        that progress callbacks go to the webhook: the agents' status events carry it)."""
        payload = {
            "spec": self.spec.model_dump(mode="json", exclude_none=True),
            "source": self.source,
            "workflow_id": self.workflow_id,
        }
        if self.options.webhook_progress:
            payload["webhook_progress"] = True
        return payload


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc


def request_fingerprint(data: dict[str, Any]) -> str:
    """What a request asks for, as a hash kept with its task: an ``Idempotency-Key`` reused
    for another request is refused (409), the same one replayed. The key itself (header or
    body field) and JSON spelling (key order, spaces) do not count."""
    asked = {name: value for name, value in data.items() if name != "idempotency_key"}
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_submission(
    data: Any,
    *,
    templates_dir: Path | None,
    default_template: str | None = None,
    catalogues: Sequence[dict[str, Any]] = (),
    allow_private_urls: bool = False,
) -> Submission:
    """Validate one of the three body shapes; InvalidRequest (or a subclass) if it is wrong.
    An inline workflow is also checked against the backends' known ``catalogues``; image and
    model URLs against the URL policy (`check_urls`)."""
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if "input" in data:
        submission = _runpod(_validate(RunpodTaskCreate, data), default_template)
    elif "workflow_id" in data or "payload" in data:
        submission = _seed(_validate(SeedTaskCreate, data))
    else:
        native = _validate(TaskCreate, fold_graph_prompt(data))
        spec = JobSpec.model_validate(native.model_dump(exclude=_OPTION_FIELDS))
        submission = Submission(spec, _options(native), "native")
    if submission.options.webhook is not None:
        check_webhook_url(submission.options.webhook)
    elif submission.options.webhook_progress:
        raise InvalidRequest(
            "webhook_progress needs a webhook URL to send the progress to",
            field="webhook_progress",
        )
    check_urls(submission.spec, allow_private=allow_private_urls)
    check_timeout(submission.spec)
    if submission.spec.template is not None:
        check_template(submission.spec.template, templates_dir)
    elif catalogues:
        check_workflow(submission.spec, catalogues)
    return placed(submission, catalogues)


def placed(submission: Submission, catalogues: Sequence[dict[str, Any]]) -> Submission:
    """The submission with its placement: what it loads, kept as a claim filter only when a
    backend known now has all of it (see docs/fleet.md "Model-aware placement")."""
    needs = placement(submission.spec, catalogues)
    if not needs.files and needs.checkpoint is None:
        return submission
    return dataclasses.replace(submission, models=needs.files, checkpoint=needs.checkpoint)


def check_workflow(spec: JobSpec, catalogues: Sequence[dict[str, Any]]) -> None:
    """`WorkflowValidationError` (422) if the inline workflow, prepared as a backend would
    prepare it, is invalid against every catalogue (the object_info of each backend known so
    far); the first catalogue's errors are reported. Other problems are left to the backend.
    With ``spec.models`` a model file may still be on its way, so combo lists are not held
    against it."""
    from comfyfleet.workflow import prepare

    names = [f"input_{index}.png" for index in range(len(spec.images))]
    first: WorkflowValidationError | None = None
    for catalogue in catalogues:
        try:
            prepare(spec, catalogue, templates_dir=None, image_names=names)
            return
        except WorkflowValidationError as exc:
            errors = exc.node_errors
            if spec.models:
                errors = [e for e in errors if e.get("type") != "value_not_in_list"]
            if not errors:
                return
            if first is None:
                first = exc if errors == exc.node_errors else WorkflowValidationError(errors)
        except Exception:
            return  # not a validation problem; the backend reports it as today
    if first is not None:
        raise first


def _options(model: TaskOptions) -> TaskOptions:
    return TaskOptions.model_validate(model.model_dump(include=_OPTION_FIELDS))


def _seed(body: SeedTaskCreate) -> Submission:
    source: dict[str, Any] = (
        {"workflow": body.payload} if body.payload is not None else {"template": body.workflow_id}
    )
    spec = _validate(JobSpec, {**source, "timeout": body.timeout}, where=("payload",))
    return Submission(spec, _options(body), "seed", workflow_id=body.workflow_id)


def _runpod(body: RunpodTaskCreate, default_template: str | None) -> Submission:
    spec = parse_worker_input(body.input, default_template)
    if spec.timeout is None and body.policy and body.policy.executionTimeout:
        spec = spec.model_copy(update={"timeout": body.policy.executionTimeout / 1000})
    return Submission(spec, _options(body), "runpod")


def parse_worker_input(value: dict[str, Any], default_template: str | None = None) -> JobSpec:
    """RunPod ``input``: whatever our RunPod worker accepts as a job (not its actions)."""
    from comfyfleet.worker.formats import parse

    parsed = parse(value, job_id=new_id(), default_template=default_template)
    if not isinstance(parsed, JobSpec):
        raise InvalidRequest(
            "worker actions (health, ready, swarm_api, ...) are not tasks; send a job",
            field="input.action",
        )
    return parsed


def _validate(model: type[M], data: Any, where: tuple[str, ...] = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, where) from exc


def _invalid(exc: ValidationError, where: tuple[str, ...]) -> InvalidRequest:
    errors = [
        {
            "loc": [*where, *(str(part) for part in error["loc"])],
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return InvalidRequest(describe(errors), errors=errors)


def describe(errors: list[dict[str, Any]]) -> str:
    """``field 'a.b': message; ...`` for the first few errors."""
    parts = []
    for error in errors[:3]:
        loc = ".".join(str(p) for p in error["loc"] if p not in ("body",))
        parts.append(f"field '{loc}': {error['message']}" if loc else error["message"])
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + "; ".join(parts) + more


def check_urls(spec: JobSpec, *, allow_private: bool) -> None:
    """`ForbiddenURL` naming the field (``images[1].image``, ``models[0].url``) for an input
    URL that is wrong without a DNS lookup; names are resolved and checked at fetch time."""
    for index, image in enumerate(spec.images):
        source = image.image.strip()
        if looks_like_url(source):
            check_url(source, field=f"images[{index}].image", allow_private=allow_private)
    for index, model in enumerate(spec.models):
        check_url(model.url, field=f"models[{index}].url", allow_private=allow_private)


MAX_TIMEOUT = 30 * 86400.0  # seconds; a deadline must be a date the queue can store


def check_timeout(spec: JobSpec) -> None:
    """A task's deadline (``timeout``, seed 004's ``timeout``, RunPod's
    ``policy.executionTimeout``) of at most `MAX_TIMEOUT` seconds."""
    if spec.timeout is not None and spec.timeout > MAX_TIMEOUT:
        raise InvalidRequest(
            f"timeout must be at most {MAX_TIMEOUT:.0f} seconds (30 days), got {spec.timeout:g}",
            field="timeout",
        )


def check_webhook_url(url: str) -> None:
    """Only absolute http(s) URLs with a host; no credentials, no whitespace. A receiver on
    the private network is allowed: it is where a self-hosted gateway's callers often live."""
    check_url(url, field="webhook", allow_private=True)


def check_template(name: str, templates_dir: Path | None) -> None:
    """The template must exist now; a typo should fail at submit, not minutes later."""
    stem = name.removesuffix(".json")
    if not is_safe_segment(stem):
        raise TemplateNotFound(f"no template named {name!r}", template=name)
    if templates_dir is None:
        raise TemplateNotFound(
            f"no template named {name!r}: no templates directory is configured "
            "(COMFYFLEET_TEMPLATES_DIR)",
            template=name,
        )
    if not (Path(templates_dir) / f"{stem}.json").is_file():
        raise TemplateNotFound(f"no template named {name!r} in {templates_dir}", template=name)
