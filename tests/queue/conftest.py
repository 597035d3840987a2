"""One `queue` fixture over every engine (the contract suite), a movable clock, and a private
PostgreSQL schema per test (other suites share the database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.queue import Queue
from comfyfleet.queue.postgres import PostgresQueue
from comfyfleet.queue.sqlite import SqliteQueue
from comfyfleet.queue.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
