"""``/api/v1/dashboard/events``: the dashboard's live feed, one stream for every page.

``task`` events are the fleet bus's status and progress events of every task (as this replica's
agents and the remote agents calling it report them, at once); ``queue`` events carry the queue's
counts whenever they change (checked every ``QUEUE_EVERY`` s, so submits on other replicas and
queued tasks show too); ``fleet`` events the backends' snapshots when they change. The stream
never ends by itself, so it is left out of the OpenAPI schema (a fuzzer would wait on it), and
it ends when the server shuts down: uvicorn waits for open responses before it stops, so an
open dashboard would otherwise hold every shutdown for the whole graceful timeout."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent

from comfyfleet.gateway.deps import GatewayDep, Reader
from comfyfleet.gateway.routes.metrics import metrics_json

router = APIRouter(include_in_schema=False)
QUEUE_EVERY = 1.0
BUFFER = 512


def server_exiting() -> bool:
    """True once uvicorn began to shut down. uvicorn tells the app nothing until every response
    has ended; its SIGINT handler is the running `uvicorn.Server`'s bound ``handle_exit``,
    whose ``should_exit`` is the flag. Anything else (another server): False."""
    server = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    return isinstance(server, uvicorn.Server) and bool(server.should_exit)


@router.get("/api/v1/dashboard/events", response_class=EventSourceResponse)
async def dashboard_events(
    request: Request, gateway: GatewayDep, principal: Reader
) -> AsyncIterator[ServerSentEvent]:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(BUFFER)
    gateway.events.listeners.add(events)
    last: dict[str, Any] = {}
    try:
        while not await request.is_disconnected() and not server_exiting():
            snapshot = jsonable_encoder(await metrics_json(gateway, principal))
            for name, value in (("queue", snapshot["queue"]), ("fleet", snapshot["backends"])):
                if last.get(name) != value:
                    last[name] = value
                    yield ServerSentEvent(event=name, data=value)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + QUEUE_EVERY
            while (left := deadline - loop.time()) > 0:
                try:  # (no yield inside a timeout: the consumer runs while we are suspended)
                    event = await asyncio.wait_for(events.get(), left)
                except TimeoutError:
                    break
                yield ServerSentEvent(event="task", data=event)
    finally:
        gateway.events.listeners.discard(events)
