"""One `queue` fixture over every engine (the contract suite), a movable clock, and a private
PostgreSQL schema per test (other suites share the database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from comfyfleet.queue import Queue
from comfyfleet.queue.postgres import PostgresQueue
from comfyfleet.queue.sqlite import SqliteQueue
from comfyfleet.queue.testing import FakeClock

PG_URL = os.environ.get("COMFYFLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
    """A fresh schema name, dropped (with everything in it) after the test."""
    schema = f"q_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def make_pg(
    pg_url: str, pg_schema: str, clock: FakeClock
) -> Iterator[Callable[..., PostgresQueue]]:
    """Build (unopened) PostgresQueues on the test's schema: each one is a 'replica'."""
    made: list[PostgresQueue] = []

    def make(**options: Any) -> PostgresQueue:
        options = {"schema": pg_schema, "clock": clock, "max_size": 4, **options}
        made.append(PostgresQueue(pg_url, **options))
        return made[-1]

    yield make


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
async def queue(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Queue]:
    if request.param == "sqlite":
        q: Queue = SqliteQueue(tmp_path / "queue.db", clock=clock)
    else:
        q = request.getfixturevalue("make_pg")()
    await q.open()
    try:
        yield q
    finally:
        await q.close()
