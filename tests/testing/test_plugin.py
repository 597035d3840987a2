"""The reusable fixtures of comfyfleet.testing.pytest_plugin, used the way other suites will."""

from __future__ import annotations

import json
import urllib.request

import aiohttp

from comfyfleet.testing.pytest_plugin import (  # noqa: F401 - fixtures
    comfy_server,
    comfy_server_process,
    comfy_server_thread,
)


async def test_comfy_server_fixture(comfy_server):  # noqa: F811
    async with (
        aiohttp.ClientSession() as session,
        session.get(comfy_server.url + "/system_stats") as resp,
    ):
        assert resp.status == 200
    assert comfy_server.input_dir.is_dir() and comfy_server.output_dir.is_dir()


def test_comfy_server_thread_fixture(comfy_server_thread):  # noqa: F811
    with urllib.request.urlopen(comfy_server_thread.url + "/features", timeout=5) as resp:
        assert json.loads(resp.read())["supports_preview_metadata"] is True


def test_comfy_server_process_fixture(comfy_server_process):  # noqa: F811
    with urllib.request.urlopen(comfy_server_process.url + "/api/features", timeout=5) as resp:
        assert resp.status == 200
    assert comfy_server_process.process.poll() is None
