"""FastAPI dependencies as ``Annotated`` aliases: routes declare what they need by type.

``Reader``/``Submitter``/``Admin``/``AgentKey`` authenticate the caller and check its role
(401 for a missing or unknown token, 403 for a role that may not do it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from comfyfleet.gateway.auth import Principal, Role, authorize
from comfyfleet.gateway.state import Gateway
from comfyfleet.queue import Queue

_bearer = HTTPBearer(auto_error=False, description="API key as 'Authorization: Bearer <token>'")


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


# The dependencies are coroutines: FastAPI runs a plain function dependency in a worker
# thread, a thread hop per request for a getattr.
async def gateway_dep(request: Request) -> Gateway:
    return request.app.state.gateway


async def queue_dep(request: Request) -> Queue:
    return get_gateway(request).queue


GatewayDep = Annotated[Gateway, Depends(gateway_dep)]
QueueDep = Annotated[Queue, Depends(queue_dep)]


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers whose key grants ``role``."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Principal:
        gateway = get_gateway(request)
        header = f"Bearer {credentials.credentials}" if credentials else None
        host = request.client.host if request.client else None
        principal = gateway.keys.authenticate(header, host)
        request.state.principal = principal
        return authorize(principal, role)

    dependency.__name__ = f"require_{role}"
    return dependency


Reader = Annotated[Principal, Depends(require("read"))]
Submitter = Annotated[Principal, Depends(require("submit"))]
Admin = Annotated[Principal, Depends(require("admin"))]
AgentKey = Annotated[Principal, Depends(require("agent"))]
