"""A `JobResult` in the shape RunPod's reference worker and seed 001 return.

Callers written against worker-comfyui read ``output.images[i].data`` and ``type`` ("base64" or
"s3_url"); seed 001's callers also read ``output.videos``. comfyfleet's own full result rides along
under ``"comfyfleet"`` with the bytes left out, so a large artifact is never sent twice.
"""

from __future__ import annotations

from typing import Any

from comfyfleet.errors import ComfyFleetError
from comfyfleet.jobs import Artifact, JobResult

RESULT_KEY = "comfyfleet"

# Artifact.kind -> output key; "images" and "videos" are always present, the rest when used.
_KEYS = {"image": "images", "video": "videos", "audio": "audio", "file": "files", "text": "text"}


def entry(artifact: Artifact) -> dict[str, Any]:
    """One ``{"filename", "type", "data"}`` item."""
    if artifact.kind == "text" and artifact.text is not None:
        kind, data = "text", artifact.text
    elif artifact.url is not None:
        kind, data = "s3_url", artifact.url
    elif artifact.data is not None:
        kind, data = "base64", artifact.data
    elif artifact.path is not None:
        kind, data = "path", artifact.path
    else:
        kind, data = "name", None
    return {"filename": artifact.filename, "type": kind, "data": data}


def summary(result: JobResult) -> dict[str, Any]:
    """The full result minus artifact bytes (those are under images/videos/...)."""
    return result.model_dump(mode="json", exclude={"artifacts": {"__all__": {"data"}}})


def success(result: JobResult) -> dict[str, Any]:
    out: dict[str, Any] = {"images": [], "videos": []}
    for artifact in result.artifacts:
        out.setdefault(_KEYS.get(artifact.kind, "files"), []).append(entry(artifact))
    out[RESULT_KEY] = summary(result)
    return out


def failure(error: ComfyFleetError, result: JobResult | None = None) -> dict[str, Any]:
    """``{"error": message, ...details}``: the SDK reports ``error`` as the job's failure."""
    out: dict[str, Any] = {
        **error.details,
        "error": error.message,
        "code": error.code,
        "retryable": error.retryable,
    }
    if result is not None:
        out[RESULT_KEY] = summary(result)
    return out
