"""The gateway under test: a real app served by uvicorn on a free port, over SQLite or
PostgreSQL (a private schema per test, since other suites share the database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.testing.pytest_plugin import comfy_server  # noqa: F401  (a fixture)

from .gateway_helpers import Served, serve


@pytest.fixture(params=["sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    """SQLite only; modules where the engine matters override it with `ENGINES`."""
    return request.param


@pytest.fixture
def make_settings(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str
) -> Callable[..., Settings]:
    """Settings for a test gateway on ``engine``; keyword arguments override fields."""
    database: dict[str, Any] = {}
    if engine == "postgres":
        database = {
            "database_url": request.getfixturevalue("pg_url"),
            "database_schema": request.getfixturevalue("pg_schema"),
        }

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "data_dir": tmp_path / "data",
            "backends": [],
            "api_keys": [],
            "webhook_secret": "test-secret",
            "webhook_backoff": 0.05,
            "lease_seconds": 30.0,
            **database,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    """A default gateway: no backends, no keys (loopback only)."""
    async with serve(create_app(make_settings())) as served:
        yield served
