"""``/api/v1/backends``: what executes tasks, and draining one for maintenance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from comfyfleet.gateway.deps import Admin, GatewayDep, Reader
from comfyfleet.gateway.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/backends", tags=["backends"], responses=ERROR_RESPONSES)


@router.get("", summary="Backends this gateway knows, with state")
async def list_backends(gateway: GatewayDep, _: Reader) -> list[dict[str, Any]]:
    return gateway.backends()


@router.post("/{name}/drain", summary="Finish current work, claim nothing more")
async def drain(name: str, gateway: GatewayDep, _: Admin) -> dict[str, Any]:
    return gateway.fleet.drain(name)


@router.post("/{name}/undrain", summary="Claim tasks again")
async def undrain(name: str, gateway: GatewayDep, _: Admin) -> dict[str, Any]:
    return gateway.fleet.undrain(name)
