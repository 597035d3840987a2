"""Metrics for people and autoscalers: seed 004's JSON shapes and the Prometheus gauges."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.metrics import worker_counts

from .gateway_helpers import ENGINES, WORKFLOW, Served, serve


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    # A backend nobody serves: it exists, and it is not healthy.
    async with serve(create_app(make_settings(backends=["gpu-1=http://127.0.0.1:1"]))) as served:
        yield served


async def fill_queue(served: Served) -> None:
    async with served.client() as http:
        for priority in (0, 0, 5):
            await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "priority": priority})
        cancelled = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()
        await http.post(f"/api/v1/tasks/{cancelled['id']}/cancel")


async def test_json_metrics_have_seed_004s_shapes(gateway: Served) -> None:
    await fill_queue(gateway)
    async with gateway.client() as http:
        body = (await http.get("/api/v1/metrics")).json()
    assert body["queue"] == {
        "pending_tasks": 3,
        "running_tasks": 0,
        "completed_tasks": 0,
        "failed_tasks": 0,
        "cancelled_tasks": 1,
        "depth_by_priority": {"0": 2, "5": 1},
        "oldest_queued_age_seconds": body["queue"]["oldest_queued_age_seconds"],
    }
    assert body["queue"]["oldest_queued_age_seconds"] >= 0
    assert set(body["workers"]) == {
        "total_workers",
        "idle_workers",
        "running_workers",
        "starting_workers",
        "failed_workers",
        "draining_workers",
    }
    assert body["workers"]["total_workers"] == 1
    assert body["backends"][0]["name"] == "gpu-1"


async def test_prometheus_text_has_what_an_autoscaler_needs(gateway: Served) -> None:
    await fill_queue(gateway)
    async with gateway.client() as http:
        response = await http.get("/metrics")
    text = response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert 'comfyfleet_queue_depth{priority="0"} 2.0' in text
    assert 'comfyfleet_queue_depth{priority="5"} 1.0' in text
    assert "comfyfleet_queue_depth_total 3.0" in text
    assert 'comfyfleet_tasks{status="cancelled"} 1.0' in text
    assert re.search(r"^comfyfleet_queue_oldest_age_seconds \d", text, re.M)
    assert 'comfyfleet_backend_up{backend="gpu-1",kind="local",label=""} 0.0' in text
    assert re.search(r'^comfyfleet_backends\{state="(starting|unhealthy)"\} 1\.0', text, re.M)
    assert "# TYPE comfyfleet_task_duration_seconds histogram" in text
    assert 'comfyfleet_tasks_submitted_total{source="native"} 4.0' in text


async def test_queue_depth_empties_when_tasks_leave(gateway: Served) -> None:
    await fill_queue(gateway)
    async with gateway.client() as http:
        for task in (await http.get("/api/v1/tasks", params={"status": "queued"})).json()["items"]:
            await http.post(f"/api/v1/tasks/{task['id']}/cancel")
        text = (await http.get("/metrics")).text
    assert "comfyfleet_queue_depth{" not in text  # no stale priority series
    assert "comfyfleet_queue_depth_total 0.0" in text
    assert "comfyfleet_queue_oldest_age_seconds 0.0" in text


def test_worker_counts_map_backend_states() -> None:
    backends = [
        {"state": "idle", "running": []},
        {"state": "busy", "running": ["t1"]},
        {"state": "idle", "running": ["t2"]},  # capacity 2, one running
        {"state": "starting", "failures": 0},  # never checked yet
        {"state": "unhealthy", "failures": 3},
        {"state": "offline"},
        {"state": "draining", "running": ["t3"]},
    ]
    assert worker_counts(backends) == {
        "total_workers": 7,
        "idle_workers": 1,
        "running_workers": 2,
        "starting_workers": 1,
        "failed_workers": 2,
        "draining_workers": 1,
    }
