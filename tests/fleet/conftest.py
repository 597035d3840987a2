"""Fixtures for the fleet suites: real queue engines (SQLite; PostgreSQL in a private schema),
real test servers as backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from comfyfleet.config import Settings
from comfyfleet.queue import Queue
from comfyfleet.queue.postgres import PostgresQueue
from comfyfleet.queue.sqlite import SqliteQueue
from comfyfleet.testing import ComfyTestServer

from .helpers import make_settings

PG_URL = os.environ.get("COMFYFLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    return lambda backends, **kw: make_settings(tmp_path, backends, **kw)


@pytest.fixture
async def start_servers(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_servers(n, job_seconds=W)``: n test servers (cache off)."""
    started: list[ComfyTestServer] = []

    async def start(n: int, **faults: Any) -> list[ComfyTestServer]:
        out = []
        for _ in range(n):
            srv = ComfyTestServer(
                root=tmp_path / f"comfy{len(started)}", cache="none", faults=faults
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


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test server; unreachable is a failure in CI and a skip elsewhere."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {PG_URL} is unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the PostgreSQL tests)")
        pytest.skip(reason)
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    schema = f"fleet_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


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
