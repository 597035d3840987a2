"""Fixtures for the fleet suites: real queue engines (SQLite; PostgreSQL in a private schema),
real test servers as backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.config import Settings
from comfyfleet.queue import Queue
from comfyfleet.queue.postgres import PostgresQueue
from comfyfleet.queue.sqlite import SqliteQueue
from comfyfleet.testing import ComfyTestServer

from .helpers import make_settings


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    return lambda backends, **kw: make_settings(tmp_path, backends, **kw)


@pytest.fixture
async def start_servers(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_servers(n, job_seconds=W)``: n test servers (cache off). They report an
    install path that is not on this host, as a ComfyUI on another machine does, so the
    gateway leaves their output files alone and `executions` can count them."""
    started: list[ComfyTestServer] = []

    async def start(n: int, **faults: Any) -> list[ComfyTestServer]:
        out = []
        for _ in range(n):
            name = f"comfy{len(started)}"
            srv = ComfyTestServer(
                root=tmp_path / name,
                cache="none",
                faults=faults,
                reported_root=f"/elsewhere/{name}",
            )
            await srv.start()
            started.append(srv)
            out.append(srv)
        return out

    yield start
    for srv in started:
        await srv.stop()


@pytest.fixture
async def sqlite_queue(tmp_path: Path) -> AsyncIterator[Queue]:
    q = SqliteQueue(tmp_path / "queue.db")
    await q.open()
    yield q
    await q.close()


@pytest.fixture
async def pg_queues(pg_url: str, pg_schema: str) -> AsyncIterator[Callable[[], Any]]:
    """``await pg_queues()``: one more opened PostgresQueue (a replica) on the test's schema."""
    made: list[PostgresQueue] = []

    async def make() -> PostgresQueue:
        q = PostgresQueue(pg_url, schema=pg_schema, max_size=4)
        await q.open()
        made.append(q)
        return q

    yield make
    for q in made:
        await q.close()
