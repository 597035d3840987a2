"""Every request body the worker accepts, each turned into a `JobSpec` or an action.

Callers already exist for each of these shapes, so they are accepted unchanged:

========================  ================================================================
shape                     recognised by
========================  ================================================================
action (seed 000)         ``action``: health, ready, swarm_api, keepalive, shutdown
video (seed 001)          ``comfyui_workflow_name``, or a top-level ``image`` string
ephemeral (seed 002)      ``images`` given as bare base64 strings; seeds randomised
ComfyUI's /prompt body   ``prompt`` that is an object: it is the API graph (`fold_graph_prompt`)
reference / comfyfleet    anything else: worker-comfyui's ``{workflow, images}`` is a JobSpec
========================  ================================================================

A ``prompt`` that is a string stays the positive text prompt.

The Comfy.org key (``api_key_comfy_org`` in worker-comfyui, ``comfy_org_api_key`` in seed 001)
becomes ``extra_data.api_key_comfy_org``, which is where ComfyUI's API nodes read it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from comfyfleet.errors import InvalidRequest
from comfyfleet.jobs import InputImage, JobSpec

API_KEY_FIELD = "api_key_comfy_org"
_KEY_ALIASES = (API_KEY_FIELD, "comfy_org_api_key")
VIDEO_IMAGE_NAME = "input_image.png"
# Keys of ComfyUI's own POST /prompt body that mean nothing outside one ComfyUI's queue.
COMFY_ONLY_KEYS = ("client_id", "front", "number", "partial_execution_targets")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- actions (seed 000) ----------------------------------------------------------------------
class Health(_Strict):
    action: Literal["health"]


class Ready(_Strict):
    action: Literal["ready"]


class Shutdown(_Strict):
    action: Literal["shutdown"]


class KeepAlive(_Strict):
    """Hold the worker for ``duration`` seconds, pinging ComfyUI every ``interval``."""

    action: Literal["keepalive"]
    duration: float = Field(default=0.0, ge=0, le=3600)
    interval: float = Field(default=10.0, gt=0, le=600)


class SwarmApi(_Strict):
    """Forwarded verbatim to SwarmUI: ``method`` ``path`` with ``payload`` as the JSON body."""

    action: Literal["swarm_api"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = Field(pattern=r"^/[^\s]*$", description="e.g. /API/GenerateText2Image")
    payload: Any = None
    timeout: float = Field(default=600.0, gt=0, le=3600)


Action = Health | Ready | Shutdown | KeepAlive | SwarmApi
ACTIONS = ("health", "ready", "swarm_api", "keepalive", "shutdown")
_ACTION = TypeAdapter(Annotated[Action, Field(discriminator="action")])


# --- seed 001: a named template with a prompt and one image ---------------------------------
class VideoRequest(_Strict):
    prompt: str
    image: str = Field(description="base64, data URI or http(s) URL")
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    length: int | None = Field(default=None, ge=1)
    comfyui_workflow_name: str | None = None
    api_key_comfy_org: str | None = None
    seed: int | Literal["random"] | None = None
    timeout: float | None = Field(default=None, gt=0)
    debug: bool = False

    def to_spec(self, job_id: str, default_template: str | None) -> JobSpec:
        template = self.comfyui_workflow_name or default_template
        if not template:
            raise InvalidRequest(
                "no workflow: give 'comfyui_workflow_name' (or configure a default template)",
                field="comfyui_workflow_name",
            )
        return JobSpec(
            id=job_id,
            template=template,
            # INPUT_IMAGE is a built-in parameter: the uploaded image's job-unique name.
            params={"VIDEO_PROMPT": self.prompt, "PROMPT": self.prompt},
            images=[InputImage(name=VIDEO_IMAGE_NAME, image=self.image)],
            width=self.width,
            height=self.height,
            length=self.length,
            seed=self.seed,
            timeout=self.timeout,
            extra_data=_api_key(self.api_key_comfy_org),
            debug=self.debug,
        )


def _api_key(key: str | None) -> dict[str, Any]:
    return {API_KEY_FIELD: key} if key else {}


# --- parsing ---------------------------------------------------------------------------------
def parse(raw: Any, *, job_id: str, default_template: str | None = None) -> Action | JobSpec:
    """The action or job a request body asks for; `InvalidRequest` naming the bad field."""
    body = _as_dict(raw)
    try:
        if "action" in body:
            if body["action"] not in ACTIONS:
                raise InvalidRequest(
                    f"unknown action {body['action']!r}; expected one of {', '.join(ACTIONS)}",
                    field="action",
                )
            return _ACTION.validate_python(body)
        body = _fold_api_key(fold_graph_prompt(body))
        if "comfyui_workflow_name" in body or isinstance(body.get("image"), str):
            return VideoRequest.model_validate(body).to_spec(job_id, default_template)
        if any(isinstance(img, str) for img in body.get("images") or []):
            return _ephemeral(body, job_id)
        if "workflow" not in body and "template" not in body and default_template:
            body["template"] = default_template
        spec = JobSpec.model_validate({**body, "id": job_id})
        _target_named_images(spec)
        return spec
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc), errors=_errors(exc)) from None


def _as_dict(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):  # worker-comfyui accepts the input as a JSON string too
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"input is not valid JSON: {exc}") from None
    if raw is None:
        raise InvalidRequest("the request has no input")
    if not isinstance(raw, dict):
        raise InvalidRequest(f"input must be a JSON object, not {type(raw).__name__}")
    return dict(raw)


def fold_graph_prompt(body: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's (and Salad's) body names the API graph ``prompt``; ours names it ``workflow``
    and keeps ``prompt`` for the text. An object ``prompt`` becomes ``workflow``; ComfyUI's
    ``prompt_id`` becomes ``id``; its queue-only keys (`COMFY_ONLY_KEYS`) are dropped."""
    graph = body.get("prompt")
    if not isinstance(graph, dict):
        return body
    if body.get("workflow") is not None or body.get("template") is not None:
        raise InvalidRequest(
            "'prompt' is an object (an API graph, as in ComfyUI's /prompt body) and "
            f"'{'workflow' if body.get('workflow') is not None else 'template'}' is set too; "
            "give the graph once (a text prompt is a string)",
            field="prompt",
        )
    out = {k: v for k, v in body.items() if k not in (*COMFY_ONLY_KEYS, "prompt", "prompt_id")}
    out["workflow"] = graph
    if isinstance(body.get("prompt_id"), str) and "id" not in out:
        out["id"] = body["prompt_id"]
    return out


def _fold_api_key(body: dict[str, Any]) -> dict[str, Any]:
    keys = [body.pop(k) for k in _KEY_ALIASES if k in body]
    key = next((k for k in keys if k), None)
    if key and "comfyui_workflow_name" not in body and not isinstance(body.get("image"), str):
        extra = dict(body.get("extra_data") or {})
        extra.setdefault(API_KEY_FIELD, key)
        body["extra_data"] = extra
    elif key:
        body[API_KEY_FIELD] = key
    return body


def _ephemeral(body: dict[str, Any], job_id: str) -> JobSpec:
    """Seed 002: bare images fill LoadImage nodes in node-id order; seeds vary per run."""
    images = [{"image": img} if isinstance(img, str) else img for img in body["images"]]
    body = {**body, "images": images, "id": job_id}
    body.setdefault("seed", "random")
    return JobSpec.model_validate(body)


def _target_named_images(spec: JobSpec) -> None:
    """worker-comfyui uploads ``images[i]`` under its ``name`` and the workflow names it in a
    LoadImage input; our inputs get job-unique names, so point each named image at the node that
    names it (the rest fill loaders in node-id order)."""
    if not spec.workflow or not spec.images:
        return
    naming: dict[str, list[str]] = {}
    for node_id, node in spec.workflow.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict) and isinstance(inputs.get("image"), str):
            naming.setdefault(inputs["image"], []).append(str(node_id))
    for image in spec.images:
        nodes = naming.get(image.name or "")
        if image.node_id is None and nodes:
            image.node_id = nodes.pop(0)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "input", "message": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


def _describe(exc: ValidationError) -> str:
    shown = "; ".join(f"{e['field']}: {e['message']}" for e in _errors(exc)[:5])
    return f"invalid input: {shown}"
