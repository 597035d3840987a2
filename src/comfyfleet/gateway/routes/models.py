"""``/api/v1/models``: which model files each backend offers (the combo lists of its loader
nodes in the cached object_info, never a request to the backend) and the configured manifest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from comfyfleet.errors import ComfyFleetError
from comfyfleet.gateway.deps import GatewayDep, Reader
from comfyfleet.gateway.schemas import ERROR_RESPONSES
from comfyfleet.models.manifest import parse_models_env

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=ERROR_RESPONSES)


class LoaderModels(BaseModel):
    class_type: str
    input: str
    options: list[str]


class BackendModels(BaseModel):
    name: str
    known: bool = Field(description="False until the backend's object_info was fetched.")
    loaders: list[LoaderModels]


class ManifestEntryOut(BaseModel):
    name: str
    folder: str
    source: str


class ModelsOut(BaseModel):
    backends: list[BackendModels]
    manifest: list[ManifestEntryOut]
    manifest_error: str | None = None


def combo_options(spec: Any) -> list[str] | None:
    """The choices of a combo input in object_info's two spellings (``[[...], {}]`` and
    ``["COMBO", {"options": [...]}]``), else None."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return [str(option) for option in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        if isinstance(options, list):
            return [str(option) for option in options]
    return None


def loader_models(object_info: dict[str, Any]) -> list[LoaderModels]:
    """Every ``*Loader*`` node's combo inputs whose name ends in ``_name`` (ckpt_name,
    lora_name, vae_name, ...): the files ComfyUI found in that model folder."""
    out = []
    for class_type, info in sorted(object_info.items()):
        if "Loader" not in class_type or not isinstance(info, dict):
            continue
        inputs = info.get("input") or {}
        for section in ("required", "optional"):
            for name, spec in (inputs.get(section) or {}).items():
                options = combo_options(spec)
                if options is not None and name.endswith("_name"):
                    out.append(LoaderModels(class_type=class_type, input=name, options=options))
    return out


@router.get("", response_model=ModelsOut, summary="Model files per backend, and the manifest")
async def models(gateway: GatewayDep, _: Reader) -> ModelsOut:
    backends = []
    for name, agent in gateway.fleet.agents.items():
        catalogue = getattr(agent.runner, "catalogue", None)
        info = catalogue() if callable(catalogue) else None
        loaders = loader_models(info) if isinstance(info, dict) else []
        backends.append(BackendModels(name=name, known=info is not None, loaders=loaders))
    manifest: list[ManifestEntryOut] = []
    error = None
    try:
        entries = parse_models_env(gateway.settings.models)
        manifest = [
            ManifestEntryOut(name=e.name, folder=e.folder, source=e.source) for e in entries
        ]
    except ComfyFleetError as exc:
        error = str(exc)
    return ModelsOut(backends=backends, manifest=manifest, manifest_error=error)
