"""``/api/v1/tasks/{id}/artifacts/{name}``: a task's outputs at stable URLs.

Local artifacts are served from the store with their media type; artifacts that went to S3
redirect there (freshly presigned when presigning is configured, so this URL never expires).
Artifacts are served inline but sandboxed: an SVG or HTML output must not run script on the
gateway's origin, where the dashboard lives. A small file (most images) is answered in one
read; a larger one streams (`FileResponse`: ranges, no whole file in memory).
"""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from comfyfleet.errors import NotFound
from comfyfleet.gateway.deps import GatewayDep, Reader
from comfyfleet.gateway.schemas import ERROR_RESPONSES
from comfyfleet.outputs.artifacts import media_type_for

router = APIRouter(tags=["tasks"], responses=ERROR_RESPONSES)

# Up to this size an artifact is read at once (a page-cache read is cheaper than the thread
# hops of a streamed response); larger ones stream.
SMALL_FILE = 256 * 1024

SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=31536000, immutable",
}


@router.get(
    "/api/v1/tasks/{task_id}/artifacts/{name}",
    summary="Download an artifact",
    response_class=Response,
    responses={200: {"description": "The artifact's bytes"}, 307: {"description": "On S3"}},
)
async def get_artifact(task_id: str, name: str, gateway: GatewayDep, _: Reader) -> Response:
    try:
        path = gateway.artifacts.path(task_id, name)
    except NotFound:
        task = await gateway.queue.get(task_id)  # unknown task: 404 naming the task
        for artifact in (task.result or {}).get("artifacts") or []:
            url = artifact.get("url") if isinstance(artifact, dict) else None
            if artifact.get("filename") == name and url and url.startswith(("http:", "https:")):
                fresh = await gateway.artifacts.s3_url(task_id, name)
                return RedirectResponse(fresh or url, status_code=307)
        raise
    headers = {**SAFE_HEADERS, "Content-Disposition": f'inline; filename="{name}"'}
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size <= SMALL_FILE:
                return Response(f.read(), media_type=media_type_for(name), headers=headers)
    except FileNotFoundError:  # purged meanwhile
        raise NotFound("no such artifact", task_id=task_id, name=name) from None
    return FileResponse(
        path,
        media_type=media_type_for(name),
        filename=name,
        content_disposition_type="inline",
        headers=SAFE_HEADERS,
    )
