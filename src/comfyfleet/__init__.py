"""comfyfleet: run ComfyUI workflows in production.

One pipeline (`comfyfleet.execute.execute`) serves every face: the RunPod worker, the gateway's
agents and the CLI. The public data model lives in `comfyfleet.jobs`.

The names below are imported on first use (module ``__getattr__``): importing any submodule
runs this file first, and ``comfyfleet worker`` must launch ComfyUI before pydantic is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyfleet.client import AsyncClient, Client, Result
    from comfyfleet.errors import ComfyFleetError
    from comfyfleet.jobs import Artifact, JobResult, JobSpec, Progress

__version__ = "0.1.0"
__all__ = [
    "Artifact",
    "AsyncClient",
    "Client",
    "ComfyFleetError",
    "JobResult",
    "JobSpec",
    "Progress",
    "Result",
    "__version__",
]

_EXPORTS = {
    "AsyncClient": "comfyfleet.client",
    "Client": "comfyfleet.client",
    "Result": "comfyfleet.client",
    "ComfyFleetError": "comfyfleet.errors",
    "Artifact": "comfyfleet.jobs",
    "JobResult": "comfyfleet.jobs",
    "JobSpec": "comfyfleet.jobs",
    "Progress": "comfyfleet.jobs",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
