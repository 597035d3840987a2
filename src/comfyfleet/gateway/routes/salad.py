"""Salad comfyui-api's ``POST /prompt`` on the gateway, so its clients switch by changing the
URL (shapes read from SaladTechnologies/comfyui-api, src/server.ts and src/types.ts).

Body: ``{"prompt": {...API graph...}, "id"?, "webhook"?, "webhook_v2"?, "convert_output"?:
{"format": "jpeg"|"jpg"|"webp", "options"?: {"quality", ...}}}``. The answer waits for the
task and echoes the body with ``id``, ``prompt``, ``images`` (base64, or the bucket URL when
the gateway stores artifacts in S3), ``filenames`` and ``stats``. With a webhook it answers
``202 {...body, "status": "ok", id, prompt}`` at once, and the gateway's own signed webhook
(``task.finished``, see docs/gateway.md) is sent to ``webhook_v2`` (or ``webhook``) — not
Salad's per-image bodies. Errors are Salad's ``{"error": message, "location": ...}``.

It shares ``/prompt`` with ComfyUI's own body (`comfy_compat`): a body with any of `SALAD_KEYS`
is Salad's.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

from fastapi.responses import JSONResponse

from comfyfleet.errors import ComfyFleetError, InvalidRequest, WorkflowValidationError
from comfyfleet.gateway import comfy_face
from comfyfleet.gateway.state import Gateway
from comfyfleet.queue import Task

SALAD_KEYS = frozenset({"id", "convert_output", "webhook", "webhook_v2", "credentials"})
FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
_FORWARDED = ("quality", "progressive", "optimize", "lossless", "method")


def is_salad(data: dict[str, Any]) -> bool:
    return bool(SALAD_KEYS & data.keys())


def _refuse(message: str, location: str = "prompt", status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message, "location": location}, status_code=status)


async def prompt(data: dict[str, Any], gateway: Gateway) -> JSONResponse:
    graph = data.get("prompt")
    if not isinstance(graph, dict):
        return _refuse("'prompt' must be an API-format graph (an object)")
    convert = data.get("convert_output")
    if convert is not None and (
        not isinstance(convert, dict) or convert.get("format") not in FORMATS
    ):
        return _refuse(
            "convert_output.format must be one of jpeg, jpg, webp", "convert_output.format"
        )
    if not comfy_face.output_nodes(graph):
        return _refuse(
            'Prompt must contain a node with a "filename_prefix" input, such as "SaveImage"'
        )
    if not gateway.fleet.backends():
        return _refuse("the gateway has no backends to run this prompt", status=503)
    webhook = data.get("webhook_v2") or data.get("webhook")
    body: dict[str, Any] = {"prompt": graph}
    if isinstance(data.get("id"), str) and data["id"]:
        body["id"] = data["id"]
    if webhook is not None:
        body["webhook"] = webhook
    started = time.monotonic()
    try:
        task, submission = await comfy_face.enqueue(gateway, body, "salad")
    except WorkflowValidationError as exc:
        first = exc.node_errors[0] if exc.node_errors else {}
        where = f"prompt.{first.get('node_id')}"
        if first.get("input_name"):
            where += f".inputs.{first['input_name']}"
        return _refuse(exc.message, where)
    except InvalidRequest as exc:
        field = exc.details.get("field")
        return _refuse(exc.message, str(field) if field else "prompt")
    echo = {**data, "id": task.id, "prompt": graph}
    if webhook is not None:
        return JSONResponse({**echo, "status": "ok"}, status_code=202)
    limit = (submission.spec.timeout or gateway.settings.job_timeout) + 60
    task = await gateway.queue.wait_finished(task.id, limit)
    if not task.finished:
        return _refuse(f"task {task.id} did not finish within {limit:.0f} s", status=504)
    if task.status != "succeeded":
        error = task.error or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return _refuse(str(message or f"task {task.status}"), status=500)
    try:
        images, filenames = await _images(gateway, task, convert)
    except ComfyFleetError as exc:
        return _refuse(exc.message, "convert_output", status=500)
    stats = {"total_time": round((time.monotonic() - started) * 1000)}
    return JSONResponse({**echo, "images": images, "filenames": filenames, "stats": stats})


async def _images(
    gateway: Gateway, task: Task, convert: dict[str, Any] | None
) -> tuple[list[str], list[str]]:
    images, filenames = [], []
    for artifact in (task.result or {}).get("artifacts") or []:
        if artifact.get("kind") == "text":
            continue
        name = comfy_face.stored_name(artifact)
        try:
            data = gateway.artifacts.path(task.id, name).read_bytes()
        except Exception:  # in S3: hand out its URL, as Salad does for uploaded outputs
            url = await gateway.artifacts.s3_url(task.id, name) or artifact.get("url")
            images.append(str(url))
            filenames.append(name)
            continue
        if convert is not None and artifact.get("kind") == "image":
            data, name = _convert(data, name, convert)
        images.append(base64.b64encode(data).decode())
        filenames.append(name)
    return images, filenames


def _convert(data: bytes, name: str, convert: dict[str, Any]) -> tuple[bytes, str]:
    """Re-encode as Salad's ``convert_output`` asks; the extension follows the format."""
    from PIL import Image

    fmt = FORMATS[convert["format"]]
    options = {k: v for k, v in (convert.get("options") or {}).items() if k in _FORWARDED}
    try:
        with Image.open(io.BytesIO(data)) as image:
            frame = image.convert("RGB") if fmt == "JPEG" else image.copy()
            out = io.BytesIO()
            frame.save(out, fmt, **options)
    except (OSError, ValueError) as exc:
        raise ComfyFleetError(f"converting {name} to {convert['format']} failed: {exc}") from exc
    stem = name.rsplit(".", 1)[0]
    return out.getvalue(), f"{stem}.{convert['format']}"
