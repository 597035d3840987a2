"""Fixtures for the pipeline tests: a ComfyUI test server per test, a client, workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from comfyfleet.comfy import Client
from comfyfleet.config import Settings
from comfyfleet.testing import ComfyTestServer


@pytest.fixture
async def comfy(tmp_path) -> AsyncIterator[ComfyTestServer]:
    async with ComfyTestServer(root=tmp_path / "comfy") as srv:
        yield srv


@pytest.fixture
async def client(comfy: ComfyTestServer) -> AsyncIterator[Client]:
    async with Client(comfy.url, reconnect_timeout=5.0, history_timeout=5.0) as c:
        yield c


@pytest.fixture
def settings() -> Settings:
    return Settings(job_timeout=30.0)
