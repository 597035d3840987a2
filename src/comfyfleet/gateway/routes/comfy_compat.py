"""A ComfyUI-compatible face: existing ComfyUI API clients point at the gateway unchanged and
the fleet looks like one big ComfyUI.

``POST /prompt`` serves two dialects told apart by shape: Salad comfyui-api's body (it has
``id``, ``convert_output``, ``webhook``/``webhook_v2`` or ``credentials``; see `salad`) gets
Salad's synchronous answer; anything else is ComfyUI's body (``prompt``, ``client_id``,
``extra_data``, ``prompt_id``...), queued on the fleet and answered ``{prompt_id, number,
node_errors}`` at once (400 with ComfyUI's ``node_errors`` when invalid). ``/ws?clientId=``
(`comfy_ws`) sends ComfyUI's messages for the prompts that client submitted; ``/history``,
``/view``, ``/queue``, ``/object_info``, ``/upload/image``, ``/interrupt`` and ``/system_stats``
answer in ComfyUI's shapes. See docs/gateway.md for what is not
supported.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from comfyfleet.errors import Conflict, InvalidRequest, NotFound
from comfyfleet.gateway import comfy_face
from comfyfleet.gateway.comfy_uploads import Uploads
from comfyfleet.gateway.deps import GatewayDep, Reader, Submitter
from comfyfleet.gateway.intake import decode_json
from comfyfleet.gateway.routes import comfy_ws, salad
from comfyfleet.gateway.routes.artifacts import get_artifact
from comfyfleet.gateway.schemas import ERROR_RESPONSES

router = APIRouter(tags=["ComfyUI-compatible"], responses=ERROR_RESPONSES)
router.include_router(comfy_ws.router)
PROMPT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "ComfyUI: {prompt_id, number, node_errors}; Salad: its answer"},
    202: {"description": "Salad body with a webhook: accepted, answered at once"},
    400: {"description": "Refused, in the dialect's own error shape (nothing queued)"},
    500: {"description": "Salad body: the task failed (its error message)"},
    503: {"description": "Salad body: no backend could run it now"},
    504: {"description": "Salad body: the task did not finish in time"},
}


def _uploads(gateway: Any) -> Uploads:
    settings = gateway.settings
    return Uploads(Path(settings.data_dir) / "comfy-uploads", settings.max_input_bytes)


@router.post(
    "/prompt",
    summary="Queue a prompt (ComfyUI's body, or Salad comfyui-api's)",
    responses=PROMPT_RESPONSES,
)
async def post_prompt(request: Request, gateway: GatewayDep, _: Submitter) -> Response:
    data = decode_json(await request.body())
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if salad.is_salad(data):
        return await salad.prompt(data, gateway)
    graph = data.get("prompt")
    if not isinstance(graph, dict):
        body = comfy_face.rejection(
            InvalidRequest("'prompt' must be an API-format graph (an object)"), graph
        )
        return JSONResponse(body, status_code=400)
    catalogues = gateway.fleet.catalogues()
    if (
        catalogues
        and not comfy_face.unknown_classes(graph, catalogues)
        and not comfy_face.output_nodes(graph, catalogues)
    ):
        return JSONResponse(
            {
                "error": {
                    "type": "prompt_no_outputs",
                    "message": "Prompt has no outputs",
                    "details": "",
                    "extra_info": {},
                },
                "node_errors": [],
            },
            status_code=400,
        )
    client_id = data.get("client_id") if isinstance(data.get("client_id"), str) else None
    number = comfy_face.next_number()
    body = {**data, "prompt_id": data.get("prompt_id") or str(uuid.uuid4())}
    uploaded = _uploads(gateway).images_for(graph)
    if uploaded:
        body["images"] = [*(data.get("images") or []), *uploaded]
    try:
        task, _sub = await comfy_face.enqueue(
            gateway, body, "comfy", {"comfy": {"client_id": client_id, "number": number}}
        )
    except InvalidRequest as exc:
        return JSONResponse(comfy_face.rejection(exc, graph), status_code=400)
    if client_id:
        comfy_ws.clients(request.app).submitted(client_id, task.id)
    return JSONResponse({"prompt_id": task.id, "number": number, "node_errors": {}})


@router.post("/upload/image", summary="Upload an input image (ComfyUI's form)")
async def upload_image(
    gateway: GatewayDep,
    _: Submitter,
    image: UploadFile,
    subfolder: Annotated[str, Form()] = "",
    overwrite: Annotated[str, Form()] = "false",
    type: Annotated[str, Form()] = "input",
) -> dict[str, Any]:
    """Kept for the prompts that name it; ``type`` other than input is refused."""
    if type != "input":
        raise InvalidRequest(f"type {type!r}: the gateway keeps input images only", field="type")
    data = await image.read(gateway.settings.max_input_bytes + 1)
    return _uploads(gateway).save(
        image.filename or "image.png", data, subfolder, overwrite.lower() in ("true", "1")
    )


@router.get("/prompt", summary="Prompts waiting or running on the whole fleet")
async def prompt_info(gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    return {"exec_info": {"queue_remaining": await comfy_face.queue_remaining(gateway)}}


@router.post("/interrupt", summary="Interrupt a prompt (ComfyUI 0.8's {prompt_id} body)")
async def interrupt(request: Request, gateway: GatewayDep, _: Submitter) -> Response:
    """With ``prompt_id``: that task is cancelled (queued: never runs; running: its prompt is
    interrupted). Without one ComfyUI stops whatever runs; a fleet has no single running prompt,
    so nothing is done."""
    raw = await request.body()
    data = decode_json(raw) if raw.strip() else {}
    prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
    if isinstance(prompt_id, str) and prompt_id:
        with contextlib.suppress(NotFound, Conflict):
            await gateway.fleet.cancel(prompt_id)
    return Response(status_code=200)


@router.post("/queue", summary="Remove pending prompts ({delete: [ids]})")
async def queue_edit(request: Request, gateway: GatewayDep, _: Submitter) -> Response:
    data = decode_json(await request.body())
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if data.get("clear"):
        raise InvalidRequest(
            "'clear' is not supported: the fleet's queue is shared; delete your prompts by id",
            field="clear",
        )
    for prompt_id in data.get("delete") or []:
        if isinstance(prompt_id, str):
            with contextlib.suppress(NotFound, Conflict):
                task = await gateway.queue.get(prompt_id)
                if task.status == "queued":  # ComfyUI's delete removes pending prompts only
                    await gateway.fleet.cancel(prompt_id)
    return Response(status_code=200)


@router.get("/system_stats", summary="ComfyUI's system_stats, for the gateway itself")
async def system_stats(gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    """Clients poll it to see that "ComfyUI" is up; the devices are the backends' business."""
    import platform
    import sys

    import psutil

    from comfyfleet import __version__

    memory = psutil.virtual_memory()
    return {
        "system": {
            "os": platform.system().lower(),
            "ram_total": memory.total,
            "ram_free": memory.available,
            "comfyui_version": f"comfyfleet-gateway {__version__}",
            "python_version": sys.version,
            "embedded_python": False,
            "argv": [],
        },
        "devices": [],
    }


@router.get("/history/{prompt_id}", summary="A finished prompt, as ComfyUI's history shows it")
async def history_one(prompt_id: str, gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    try:
        task = await gateway.queue.get(prompt_id)
    except NotFound:
        return {}
    if not task.finished:
        return {}  # ComfyUI writes history when the prompt is done
    return {task.id: comfy_face.history_entry(task)}


@router.get("/history", summary="Recently finished prompts, newest first")
async def history(
    gateway: GatewayDep,
    _: Reader,
    max_items: Annotated[int, Query(ge=1, le=500)] = 64,
) -> dict[str, Any]:
    page = await gateway.queue.list(limit=max_items)
    return {t.id: comfy_face.history_entry(t) for t in page.items if t.finished}


@router.get("/queue", summary="Running and pending prompts of the whole fleet")
async def queue(gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    running = await gateway.queue.list(status="running", limit=500)
    pending = await gateway.queue.list(status="queued", limit=500)
    return {
        "queue_running": [comfy_face.queue_row(t) for t in running.items],
        "queue_pending": [comfy_face.queue_row(t) for t in reversed(pending.items)],
    }


@router.get(
    "/view",
    summary="An output file, by ComfyUI's filename/subfolder/type",
    response_class=Response,
    responses={200: {"description": "The file's bytes"}, 307: {"description": "On S3"}},
)
async def view(
    gateway: GatewayDep,
    principal: Reader,
    filename: str,
    subfolder: str = "",
    type: str = "output",
) -> Response:
    if type != "output" or not subfolder:
        raise NotFound(
            f"no {type} file {filename!r} here: the gateway serves task outputs "
            "(subfolder = the prompt id, type=output)"
        )
    return await get_artifact(subfolder, filename, gateway, principal)


@router.get("/object_info", summary="Every node class any known backend has")
async def object_info(gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for catalogue in gateway.fleet.catalogues():
        for name, info in catalogue.items():
            merged.setdefault(name, info)
    return merged


@router.get("/object_info/{node_class}", summary="One node class")
async def object_info_one(node_class: str, gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    for catalogue in gateway.fleet.catalogues():
        if node_class in catalogue:
            return {node_class: catalogue[node_class]}
    return {}
