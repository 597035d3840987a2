"""Remote pull agents: real ``comfyfleet agent`` processes talking HTTP to a real gateway app,
test servers as their ComfyUIs; an agent killed with SIGKILL mid-task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.gateway.app import create_app

from .helpers import Served, executions, final, post_task, serve, until

SUBMIT, AGENT, ADMIN = "sub-token", "agent-token", "admin-token"


@pytest.fixture
async def gateway(settings_for) -> AsyncIterator[Served]:
    """A gateway with no local backends: only remote agents execute."""
    settings = settings_for(
        [], lease_seconds=1.5, api_keys=[f"{SUBMIT}:submit", f"{AGENT}:agent", f"{ADMIN}:admin"]
    )
    async with serve(create_app(settings)) as served:
        yield served


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Any]:
    """``agents(gateway_url, comfy_url, name)`` starts ``comfyfleet agent`` processes."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(gateway_url: str, comfy_url: str, name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"agent-{name}.log").open("ab")
        env = {**os.environ, "COMFYFLEET_RETRY_BACKOFF": "0.1", "COMFYFLEET_LOG_LEVEL": "DEBUG"}
        cmd = [
            sys.executable,
            "-m",
            "comfyfleet.cli",
            "agent",
            "--gateway",
            gateway_url,
            "--comfy",
            comfy_url,
            "--token",
            AGENT,
            "--name",
            name,
            "--wait",
            "5",
        ]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_remote_agent_runs_tasks_and_uploads_artifacts(
    gateway, agents, start_servers
) -> None:
    [comfy] = await start_servers(1)
    agents(gateway.url, comfy.url, "gpu-a")
    async with gateway.client(SUBMIT) as client:
        posted = [await post_task(client) for _ in range(3)]
        slow, _ = await post_task(client, slow_steps=12)
        progress = await until(client, slow, "progress")
        done = [await final(client, task_id) for task_id, _ in posted]
        assert (await final(client, slow))["status"] == "succeeded"
        artifact = done[0]["result"]["artifacts"][0]
        image = await client.get(artifact["url"])
    assert [t["status"] for t in done] == ["succeeded"] * 3
    assert {t["backend"] for t in done} == {"gpu-a"}
    assert [executions([comfy.output_dir], prefix) for _, prefix in posted] == [1, 1, 1]
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert "percent" in progress or "value" in progress
    [backend] = gateway.gateway.backends()
    assert backend["kind"] == "remote" and backend["name"] == "gpu-a"
    assert backend["executed"] == 4


async def test_agent_protocol_needs_the_agent_role(gateway) -> None:
    body = {"agent_id": "x1", "name": "n"}
    async with gateway.client(SUBMIT) as client:
        resp = await client.post("/api/v1/agent/claim", json=body)
    assert resp.status_code == 403
    async with gateway.client() as client:
        resp = await client.post("/api/v1/agent/claim", json=body)
    assert resp.status_code == 401
    async with gateway.client(AGENT) as client:
        resp = await client.post("/api/v1/agent/claim", json=body)  # nothing queued
        assert resp.status_code == 204
        resp = await client.post("/api/v1/agent/tasks/nope/complete", json={**body, "result": {}})
    assert resp.status_code == 404


async def test_cancel_reaches_a_remote_agent(gateway, agents, start_servers) -> None:
    [comfy] = await start_servers(1, job_seconds=60)
    agents(gateway.url, comfy.url, "gpu-a")
    async with gateway.client(SUBMIT) as client:
        task_id, prefix = await post_task(client)
        await until(client, task_id, "started")
        (await client.post(f"/api/v1/tasks/{task_id}/cancel")).raise_for_status()
        done = await final(client, task_id)
    assert done["status"] == "cancelled"
    assert executions([comfy.output_dir], prefix) == 0
    assert comfy.queue_info()["exec_info"]["queue_remaining"] == 0  # prompt interrupted


async def test_drained_remote_agent_claims_nothing(gateway, agents, start_servers) -> None:
    a, b = await start_servers(2)
    agents(gateway.url, a.url, "gpu-a")
    async with gateway.client(SUBMIT) as client, gateway.client(ADMIN) as admin:
        first, _ = await post_task(client)
        assert (await final(client, first))["backend"] == "gpu-a"
        (await admin.post("/api/v1/backends/gpu-a/drain")).raise_for_status()
        agents(gateway.url, b.url, "gpu-b")
        later = [await post_task(client) for _ in range(3)]
        done = [await final(client, task_id) for task_id, _ in later]
        states = {x["name"]: x["state"] for x in (await admin.get("/api/v1/backends")).json()}
    assert {t["backend"] for t in done} == {"gpu-b"}
    assert states["gpu-a"] == "drained"


async def test_killed_agent_task_finishes_on_another_backend(
    gateway, agents, start_servers
) -> None:
    a, b = await start_servers(2)
    a.faults.job_seconds = 60  # a's task is mid-run when its agent dies
    doomed = agents(gateway.url, a.url, "gpu-a")
    async with gateway.client(SUBMIT) as client:
        task_id, prefix = await post_task(client)
        started = await until(client, task_id, "started")
        assert started["backend"] == "gpu-a"
        agents(gateway.url, b.url, "gpu-b")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        done = await final(client, task_id)
    assert done["status"] == "succeeded" and done["backend"] == "gpu-b"
    assert done["attempts"] == 2
    assert executions([b.output_dir], prefix) == 1
