"""A job from a caller's arguments: workflow file, graph or template name; any number of images
(paths, bytes or URLs); prompt / negative; a fixed or random seed; template params. Built into
a `JobSpec` here, once, so every target receives the same job and bad arguments fail before
anything is sent."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from comfyfleet.errors import InvalidRequest, WorkflowFormatError
from comfyfleet.jobs import JobSpec

ImageInput = str | os.PathLike[str] | bytes | Mapping[str, Any]
Seed = int | Literal["random"] | None


def build_spec(
    workflow: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    template: str | None = None,
    images: Sequence[ImageInput] = (),
    prompt: str | None = None,
    negative: str | None = None,
    seed: Seed = None,
    params: Mapping[str, Any] | None = None,
    **fields: Any,
) -> JobSpec:
    """The JobSpec for these arguments; `InvalidRequest` naming the argument otherwise.
    ``workflow`` is a graph, or the path of a JSON file; ``fields`` are other JobSpec fields
    (width, height, length, timeout, outputs, extra_data, debug, models, id)."""
    from pydantic import ValidationError

    graph = _graph(workflow) if workflow is not None else None
    try:
        return JobSpec(
            workflow=graph,
            template=template,
            params=dict(params or {}),
            images=[_image(item, index) for index, item in enumerate(images)],
            prompt=prompt,
            negative=negative,
            seed=seed,
            **fields,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None


def _graph(workflow: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(workflow, Mapping):
        return dict(workflow)
    path = Path(workflow)
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read workflow {path}: {exc.strerror}", field="workflow"
        ) from None
    except ValueError as exc:
        raise WorkflowFormatError(f"workflow {path} is not valid JSON: {exc}") from None
    if not isinstance(graph, dict):
        raise WorkflowFormatError(f"workflow {path} is not a JSON object")
    return graph


def _image(item: ImageInput, index: int) -> dict[str, Any]:
    """bytes → base64; ``http(s)://`` or ``data:`` strings are sent as they are (the server
    fetches URLs, size-capped and SSRF-checked); any other string or path is a file."""
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, bytes | bytearray):
        return {"name": f"image_{index}.png", "image": base64.b64encode(item).decode()}
    text = os.fspath(item)
    if text.startswith(("http://", "https://", "data:")):
        return {"image": text}
    path = Path(text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read image {path}: {exc.strerror}", field=f"images[{index}]"
        ) from None
    return {"name": path.name, "image": base64.b64encode(data).decode()}
