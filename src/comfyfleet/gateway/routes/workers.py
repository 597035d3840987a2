"""``/api/v1/workers``: the worker manager's workers (state, pool, age, current task, last
error, logs of failed ones) and its pools. Empty when no pool is configured."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from comfyfleet.gateway.deps import GatewayDep, Reader
from comfyfleet.gateway.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/workers", tags=["workers"], responses=ERROR_RESPONSES)


@router.get("", summary="Workers the gateway started, with state, and its pools")
async def list_workers(gateway: GatewayDep, _: Reader) -> dict[str, Any]:
    manager = gateway.fleet.workers
    if manager is None:
        return {"leader": None, "pools": [], "workers": []}
    return {
        "leader": manager.leader,
        "pools": manager.pool_stats(),
        "workers": manager.workers(),
    }
