"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (the queue answers; with
``?backend=required`` also at least one healthy backend). Unauthenticated, for orchestrators,
so they name backends and states but no URLs or errors (those are in /api/v1/backends)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from comfyfleet import __version__
from comfyfleet.errors import ComfyFleetError
from comfyfleet.gateway.deps import GatewayDep
from comfyfleet.gateway.metrics import backend_state
from comfyfleet.gateway.schemas import ErrorResponse
from comfyfleet.gateway.state import DEMO_LABEL, describe_database

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        400: {"model": ErrorResponse, "description": "Unknown ?backend value"},
        503: {"description": "Not ready (the body says why)"},
    },
)
async def readyz(
    gateway: GatewayDep,
    backend: Literal["required", "optional"] | None = Query(
        default=None, description="'required': not ready unless a backend is healthy"
    ),
) -> JSONResponse:
    body: dict[str, Any] = {"version": __version__, "auth": gateway.keys.mode}
    ready = True
    try:
        await gateway.queue.stats()
        body["queue"] = {"ok": True, "database": describe_database(gateway.settings)}
    except ComfyFleetError as exc:
        ready = False
        body["queue"] = {"ok": False, "error": exc.to_dict()}
    backends = gateway.backends()
    healthy = sum(1 for b in backends if b.get("healthy") and not b.get("draining"))
    body["backends"] = {
        "total": len(backends),
        "healthy": healthy,
        "items": [
            {
                "name": b.get("name"),
                "kind": b.get("kind"),
                "state": backend_state(b),
                "label": b.get("label"),
            }
            for b in backends
        ],
    }
    if gateway.demo:
        body["demo"] = DEMO_LABEL
    if backend == "required" and not healthy:
        ready = False
    body["status"] = "ready" if ready else "not_ready"
    return JSONResponse(body, status_code=200 if ready else 503)
