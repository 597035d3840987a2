"""The dashboard: static files without a CDN or build step, and a real headless Chromium
rendering queue, backends, tasks and a task's detail with its image."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer

from .gateway_helpers import WORKFLOW, Served, serve

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer
) -> AsyncIterator[Served]:
    settings = make_settings(backends=[f"comfy={comfy_server.url}"])
    async with serve(create_app(settings)) as served:
        yield served


async def test_page_and_assets_are_local(gateway: Served) -> None:
    async with gateway.client() as http:
        page = await http.get("/")
        script = await http.get("/static/dashboard.js")
        style = await http.get("/static/dashboard.css")
    assert page.headers["content-type"].startswith("text/html")
    assert script.status_code == style.status_code == 200
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    # No CDN: every script and stylesheet comes from this gateway.
    assert not re.search(r'(src|href)="https?://', page.text)
    assert "innerHTML" not in script.text  # task data is rendered as text only


def chromium() -> str:
    """The browser is part of the suite: missing, the test fails and says how to get it."""
    if shutil.which(CHROMIUM):
        return CHROMIUM
    pytest.fail(
        f"{CHROMIUM} is missing: `make browser` installs Debian's chromium "
        "(or set CHROMIUM to a Chromium binary)",
        pytrace=False,
    )


async def render(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets fetches and timers settle)."""
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


async def test_dashboard_in_a_real_browser(gateway: Served, tmp_path: Path) -> None:
    async with gateway.client() as http:
        done = (await http.post("/api/v1/tasks?wait=60", json={"workflow": WORKFLOW})).json()
        queued_first = await http.post("/api/v1/backends/comfy/drain")
        assert queued_first.status_code == 200
        # A remote agent that called in once (nothing to claim yet), then went silent.
        claim = await http.post("/api/v1/agent/claim", json={"agent_id": "a1", "name": "gpu-r"})
        assert claim.status_code == 204
        waiting = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()
    assert done["status"] == "succeeded"
    remotes = gateway.gateway.fleet.remotes
    remotes.clock = lambda: time.monotonic() + remotes.offline_after + 1

    dom = await render(f"{gateway.url}/#task={done['id']}", tmp_path / "profile")

    assert '<form id="login" hidden="">' in dom  # no keys: no token asked
    # Queue: one succeeded, one queued; backends with state; both tasks listed.
    assert re.search(r'data-metric="succeeded"><b>1</b>', dom)
    assert re.search(r'data-metric="queued"><b>1</b>', dom)
    assert re.search(r'data-backend="comfy">.*?<span class="status drained">drained</span>', dom)
    assert re.search(r'data-backend="gpu-r">.*?<span class="status offline">offline</span>', dom)
    assert f'data-task="{done["id"]}"' in dom
    assert f'data-task="{waiting["id"]}"' in dom
    # Task detail, live over SSE: its events, and the image fetched with the API.
    assert f'<code id="detail-id">{done["id"]}</code>' in dom
    assert 'data-event="finished"' in dom
    assert re.search(r'<img alt="[^"]+\.png" src="blob:[^"]+" data-loaded="true">', dom)
