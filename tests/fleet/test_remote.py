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

from comfyfleet.fleet.registry import RemoteAgents
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


async def test_a_task_failing_on_a_remote_agent_reads_the_node_it_died_in(
    gateway, agents, start_servers
) -> None:
    """The failing node's step reaches the task although no heartbeat was due before the
    failure (heartbeats are rate-limited; the agent sends its last step before failing)."""
    [comfy] = await start_servers(1)
    agents(gateway.url, comfy.url, "gpu-a")
    async with gateway.client(SUBMIT) as client:
        task_id, _ = await post_task(client, slow_steps=2, fail=True)
        done = await final(client, task_id)
    assert done["status"] == "failed"
    progress = done["progress"]
    assert (progress["stage"], progress["node"], progress["class_type"]) == (
        "running",
        "4",
        "FleetTestFail",
    )


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


# --- the registry: agents that stop calling in, one state everywhere ------------------------


class Clock:
    """A monotonic clock the test moves by hand (expiry is about time passing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_agent_goes_offline_then_is_forgotten_keeping_its_counts() -> None:
    clock = Clock()
    agents = RemoteAgents(offline_after=75.0, expire_after=600.0, clock=clock)
    backend = agents.touch("gpu-a")
    backend.started("t1")
    backend.finished("t1", ok=True)
    backend.started("t2")
    backend.finished("t2", ok=False)
    [live] = agents.snapshots()
    assert (live["state"], live["healthy"]) == ("idle", True)
    clock.now += 76
    [silent] = agents.snapshots()
    assert (silent["state"], silent["healthy"]) == ("offline", False)
    clock.now += 600
    assert agents.snapshots() == [] and "gpu-a" not in agents
    assert agents.retired.as_dict() == {"agents": 1, "executed": 1, "failed": 1}


def test_an_agent_holding_a_task_or_a_claim_is_never_forgotten() -> None:
    clock = Clock()
    agents = RemoteAgents(offline_after=75.0, expire_after=10.0, clock=clock)
    agents.touch("runs").started("t1")
    agents.touch("claims").claiming += 1
    clock.now += 3600
    assert sorted(s["name"] for s in agents.snapshots()) == ["claims", "runs"]
    assert {s["state"] for s in agents.snapshots()} <= {"idle", "busy"}


async def test_only_claims_register_agents_and_silent_ones_expire(settings_for) -> None:
    """Reports for tasks an agent does not hold (what a fuzzer sends) register nobody; agents
    that claimed and went silent are pruned from /api/v1/backends and the worker metrics,
    while the Prometheus totals keep what they did."""
    settings = settings_for([], api_keys=[f"{AGENT}:agent", f"{ADMIN}:admin"])
    async with serve(create_app(settings)) as served:
        clock = Clock()
        served.gateway.fleet.remotes.clock = clock
        async with served.client(AGENT) as agent, served.client(ADMIN) as admin:
            for name in ("ghost-1", "ghost-2"):
                ident = {"agent_id": "a1", "name": name}
                await agent.post("/api/v1/agent/tasks/nope/heartbeat", json=ident)
                await agent.post("/api/v1/agent/tasks/nope/complete", json={**ident, "result": {}})
                await agent.post(
                    "/api/v1/agent/tasks/nope/fail", json={**ident, "error": {"code": "x"}}
                )
            assert (await admin.get("/api/v1/backends")).json() == []
            for name in ("gpu-a", "gpu-b"):
                claim = {"agent_id": "a1", "name": name}
                assert (await agent.post("/api/v1/agent/claim", json=claim)).status_code == 204
            names = {b["name"] for b in (await admin.get("/api/v1/backends")).json()}
            assert names == {"gpu-a", "gpu-b"}
            clock.now += settings.agent_expiry_seconds + 1
            backends = (await admin.get("/api/v1/backends")).json()
            metrics = (await admin.get("/api/v1/metrics")).json()
            text = (await admin.get("/metrics")).text
    assert backends == [] and metrics["backends"] == []
    assert metrics["workers"]["total_workers"] == 0
    assert metrics["expired_agents"] == {"agents": 2, "executed": 0, "failed": 0}
    assert "comfyfleet_remote_agents_expired_total 2.0" in text


async def test_an_offline_agent_reads_offline_and_unhealthy_everywhere(settings_for) -> None:
    settings = settings_for([], api_keys=[f"{AGENT}:agent", f"{ADMIN}:admin"])
    async with serve(create_app(settings)) as served:
        clock = Clock()
        served.gateway.fleet.remotes.clock = clock
        async with served.client(AGENT) as agent, served.client(ADMIN) as admin:
            claim = {"agent_id": "a1", "name": "gpu-a"}
            assert (await agent.post("/api/v1/agent/claim", json=claim)).status_code == 204
            clock.now += 76  # silent longer than max(2 x lease, 75 s), not yet expired
            [listed] = (await admin.get("/api/v1/backends")).json()
            metrics = (await admin.get("/api/v1/metrics")).json()
            text = (await admin.get("/metrics")).text
            ready = (await admin.get("/readyz")).json()
    [shown] = metrics["backends"]  # what the dashboard renders
    for snapshot in (listed, shown):
        assert (snapshot["state"], snapshot["healthy"]) == ("offline", False)
    assert metrics["workers"]["failed_workers"] == 1
    assert 'comfyfleet_backend_up{backend="gpu-a",kind="remote",label=""} 0.0' in text
    assert 'comfyfleet_backends{state="offline"} 1.0' in text
    assert ready["backends"]["healthy"] == 0
    assert ready["backends"]["items"][0]["state"] == "offline"
