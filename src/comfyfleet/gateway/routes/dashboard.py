"""``/``: the dashboard. Static ES modules (no build step) that read the same API as any
client; the first HTML response already carries the data of the first screen (queue, fleet,
templates, recent tasks) when the caller may read it, so the page paints without waiting for a
round trip. With API keys the page asks for a key first and nothing is embedded."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse

from comfyfleet.errors import ComfyFleetError
from comfyfleet.gateway.auth import authorize
from comfyfleet.gateway.routes.metrics import metrics_json
from comfyfleet.gateway.routes.templates import describe_templates
from comfyfleet.gateway.routes.workers import list_workers
from comfyfleet.gateway.state import DEMO_LABEL, Gateway
from comfyfleet.gateway.views import task_out

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
INDEX = Path(__file__).resolve().parent.parent / "static" / "index.html"
MARKER = "<!--BOOT-->"
FIRST_PAGE = 25


async def boot_data(request: Request, gateway: Gateway) -> dict[str, Any]:
    """What the first screen needs, or only ``{"auth": true}`` if the caller must log in."""
    data: dict[str, Any] = {"demo": DEMO_LABEL if gateway.demo else None}
    host = request.client.host if request.client else None
    try:
        authorize(gateway.keys.authenticate(None, host), "read")
    except ComfyFleetError:
        return {**data, "auth": True}
    page = await gateway.queue.list(limit=FIRST_PAGE)
    base = str(request.base_url)
    data.update(
        auth=False,
        metrics=await metrics_json(gateway, None),  # type: ignore[arg-type]
        workers=await list_workers(gateway, None),  # type: ignore[arg-type]
        templates=describe_templates(gateway.settings.templates_dir),
        tasks={"items": [task_out(t, base) for t in page.items], "next_cursor": page.next_cursor},
    )
    return data


def embed(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(jsonable_encoder(data), separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/")
async def dashboard(request: Request) -> HTMLResponse:
    gateway: Gateway = request.app.state.gateway
    try:
        boot = await boot_data(request, gateway)
    except Exception as exc:  # the page still loads (and says why once its scripts ask)
        log.warning("dashboard: no embedded data (%s)", exc)
        boot = {"demo": DEMO_LABEL if gateway.demo else None}
    html = INDEX.read_text(encoding="utf-8").replace(
        MARKER, f'<script type="application/json" id="boot">{embed(boot)}</script>'
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
