"""``/api/v1/templates``: the saved workflow templates and their typed parameters, so a form
(the dashboard's, or any client's) can be built from them without reading the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from comfyfleet.errors import ComfyFleetError
from comfyfleet.gateway.deps import GatewayDep, Reader
from comfyfleet.gateway.schemas import ERROR_RESPONSES
from comfyfleet.workflow.templates import PLACEHOLDER, list_templates, load_template

router = APIRouter(prefix="/api/v1/templates", tags=["templates"], responses=ERROR_RESPONSES)

ParamType = Literal["string", "integer", "number", "boolean", "json", "image"]
# Filled from the task's own fields (prepare.builtin_params), not from ``params``.
BUILTIN: dict[str, ParamType] = {
    "PROMPT": "string",
    "NEGATIVE_PROMPT": "string",
    "WIDTH": "integer",
    "HEIGHT": "integer",
    "LENGTH": "integer",
    "SEED": "integer",
    "INPUT_IMAGE": "image",
    "JOB_ID": "string",
}


class TemplateParam(BaseModel):
    name: str
    type: ParamType
    default: Any = None
    required: bool = Field(description="No default: the task must give a value.")
    builtin: bool = Field(
        description="Filled from the task's own fields (prompt, negative, seed, width, height, "
        "length, images, id) rather than from params."
    )


class TemplateOut(BaseModel):
    name: str
    params: list[TemplateParam]
    error: str | None = Field(default=None, description="Why the file could not be read.")


def _type_of(value: Any, embedded: bool) -> ParamType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str) or embedded:
        return "string"
    return "json"


def template_params(text: str) -> list[TemplateParam]:
    """Every placeholder of a template once, in order of first appearance, typed by its
    default (or, for the built-ins, by the field that fills it)."""
    seen: dict[str, TemplateParam] = {}
    for match in PLACEHOLDER.finditer(text):
        name, raw = match.group(1), match.group(2)
        if name in seen and (raw is None or seen[name].default is not None):
            continue
        default: Any = None
        if raw is not None:
            try:
                default = json.loads(raw)
            except json.JSONDecodeError:
                default = raw
        # Inside a longer JSON string ("a photo of {{ X }}") a value is always text.
        before, after = text[: match.start()], text[match.end() :]
        embedded = not (before.endswith('"') and after.startswith('"')) and (
            before.count('"') % 2 == 1
        )
        builtin = name in BUILTIN or name.startswith("INPUT_IMAGE")
        kind = BUILTIN.get(name, "image" if builtin else _type_of(default, embedded))
        seen[name] = TemplateParam(
            name=name,
            type=kind,
            default=default,
            required=raw is None and not builtin,
            builtin=builtin,
        )
    return list(seen.values())


def describe_templates(templates_dir: Path | None) -> list[TemplateOut]:
    out = []
    for name in list_templates(templates_dir):
        try:
            out.append(
                TemplateOut(name=name, params=template_params(load_template(templates_dir, name)))
            )
        except (OSError, UnicodeDecodeError, ComfyFleetError) as exc:
            out.append(TemplateOut(name=name, params=[], error=str(exc)))
    return out


@router.get("", response_model=list[TemplateOut], summary="Saved templates and their parameters")
async def templates(gateway: GatewayDep, _: Reader) -> list[TemplateOut]:
    """The templates in ``COMFYFLEET_TEMPLATES_DIR`` (empty without one). Submit one with
    ``{"template": NAME, "params": {...}, "prompt": ..., "seed": ...}``."""
    return describe_templates(gateway.settings.templates_dir)
