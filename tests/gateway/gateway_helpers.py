"""Helpers for the gateway tests: serving an app on a free port, a small workflow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg import sql

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.state import Gateway
from comfyfleet.testing import ComfyTestServer

# One TLS context for every test client: building one per client costs ~0.1 s.
TLS = ssl.create_default_context()
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def drop_schema(url: str, schema: str) -> None:
    """Remove a test's PostgreSQL schema with everything in it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Served:
    """A running gateway: its URL, app and live state."""

    url: str
    app: FastAPI

    @property
    def gateway(self) -> Gateway:
        return self.app.state.gateway

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=30.0, verify=TLS, **kwargs
        )

    async def count_tasks(self) -> int:
        stats = await self.gateway.queue.stats()
        return sum(stats.counts.values())


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[Served]:
    """Serve ``app`` with uvicorn on a free port. The socket listens before uvicorn starts, so
    requests made at once simply wait in the backlog until the app is up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, verify=TLS) as client:
        probe = asyncio.create_task(client.get("/healthz"))
        await asyncio.wait({task, probe}, return_when=asyncio.FIRST_COMPLETED)
        if not probe.done():  # uvicorn ended first: the app did not start
            probe.cancel()
            sock.close()
            task.result()
            raise RuntimeError("the gateway did not start")
        probe.result().raise_for_status()
    try:
        yield Served(url, app)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def catalogue_known(served: Served) -> None:
    """Until the ``comfy`` backend's first health check has fetched its object_info (submit-time
    validation needs it)."""
    fleet = served.gateway.fleet
    backend = fleet.backend("comfy")
    async with asyncio.timeout(30):
        while not fleet.catalogues():
            await backend.changed(timeout=5)


@pytest.fixture(name="gateway")
async def comfy_gateway(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer
) -> AsyncIterator[Served]:
    """The ``gateway`` of a module that imports this: the test server as its ``comfy`` backend,
    whose catalogue is known."""
    async with serve(create_app(make_settings(backends=[f"comfy={comfy_server.url}"]))) as served:
        await catalogue_known(served)
        yield served


WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream response, as they arrive."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []
