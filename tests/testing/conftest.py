"""Fixtures for the test server's own tests (other suites use comfyfleet.testing.pytest_plugin)."""

from __future__ import annotations

import aiohttp
import pytest_asyncio

from comfyfleet.testing import ComfyTestServer


@pytest_asyncio.fixture
async def server(tmp_path):
    async with ComfyTestServer(root=tmp_path / "comfy") as srv:
        yield srv


@pytest_asyncio.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s
