"""Fixtures every area shares: the PostgreSQL server the suites must run against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

PG_URL = os.environ.get("COMFYFLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


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
    """A fresh schema name for one test (suites share the database), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
