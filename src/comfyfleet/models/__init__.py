"""Model files for ComfyUI: volume roots, extra_model_paths.yaml, manifests, downloads, cache.

Names are imported lazily so that ``comfyfleet --help`` (which imports ``.commands``) does not
pay for aiohttp or huggingface_hub.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelRoot": "volumes",
    "Detection": "volumes",
    "detect_roots": "volumes",
    "build_config": "paths",
    "render": "paths",
    "generate": "paths",
    "link_folders": "paths",
    "ModelEntry": "manifest",
    "load_manifest": "manifest",
    "parse_models_env": "manifest",
    "Sources": "sync",
    "sync": "sync",
    "status": "sync",
    "ModelCache": "ondemand",
    "ensure_models": "ondemand",
    "JobModels": "jobmodels",
    "model_root": "jobmodels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
