"""End to end through a real backend: the gateway's local agent runs tasks on the ComfyUI test
server; events, ``?wait``, cancel, failures and metrics as a client sees them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer

from .gateway_helpers import ENGINES, Served, serve, sse_events


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def graph(*, steps: int = 2, seconds: float = 0.01, fail: bool = False) -> dict[str, Any]:
    middle: dict[str, Any] = (
        {"class_type": "FleetTestFail", "inputs": {"image": ["1", 0], "message": "on purpose"}}
        if fail
        else {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": seconds},
        }
    )
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255},
        },
        "2": middle,
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "gw"}},
    }


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer
) -> AsyncIterator[Served]:
    settings = make_settings(backends=[f"comfy={comfy_server.url}"])
    async with serve(create_app(settings)) as served:
        yield served


async def test_a_task_runs_and_streams_its_life(gateway: Served) -> None:
    async with gateway.client() as http:
        # Drained, the backend takes nothing: the stream starts with the task queued.
        assert (await http.post("/api/v1/backends/comfy/drain")).status_code == 200
        task_id = (await http.post("/api/v1/tasks", json={"workflow": graph(steps=3)})).json()["id"]
        async with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            stream = sse_events(response)
            assert (await anext(stream))[0] == "queued"
            assert (await http.post("/api/v1/backends/comfy/undrain")).status_code == 200
            events = [event async for event in stream]
        names = [name for name, _ in events]
        assert names[0] == "started" and names[-2:] == ["artifacts", "finished"]
        assert set(names[1:-2]) == {"progress"}
        finished = events[-1][1]
        assert finished["status"] == "succeeded" and finished["backend"] == "comfy"
        (artifact,) = finished["result"]["artifacts"]
        image = await http.get(artifact["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


async def test_wait_returns_the_result(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks?wait=60", json={"workflow": graph()})
        metrics = (await http.get("/metrics")).text
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["attempts"] == 1
    assert body["result"]["artifacts"][0]["url"].startswith(gateway.url)
    assert {"queued_seconds", "run_seconds", "total_seconds"} <= set(body["timings"])
    assert 'comfyfleet_task_duration_seconds_count{status="succeeded"} 1.0' in metrics
    assert 'comfyfleet_backend_up{backend="comfy",kind="local",label=""} 1.0' in metrics


async def test_cancel_interrupts_the_running_prompt_only(gateway: Served) -> None:
    async with gateway.client() as http:
        slow = graph(steps=10_000, seconds=0.05)
        task_id = (await http.post("/api/v1/tasks", json={"workflow": slow})).json()["id"]
        async with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            stream = sse_events(response)
            async for name, data in stream:
                if name == "progress" and data.get("node") == "2":
                    break  # the slow node is running
            cancel = await http.post(f"/api/v1/tasks/{task_id}/cancel")
            assert cancel.status_code == 200
            *_, (name, data) = [event async for event in stream]
        assert (name, data["status"]) == ("finished", "cancelled")
        # The backend is free and healthy again: the next task runs normally.
        after = await http.post("/api/v1/tasks?wait=60", json={"workflow": graph()})
    assert after.json()["status"] == "succeeded"


async def test_a_failing_node_fails_the_task_with_the_precise_error(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks?wait=60", json={"workflow": graph(fail=True)})
        backends = (await http.get("/api/v1/backends")).json()
    body = response.json()
    assert body["status"] == "failed"
    assert body["attempts"] == 1  # a node error is not retried
    assert body["error"]["code"] == "node_execution_error"
    assert "on purpose" in body["error"]["message"]
    assert backends[0]["name"] == "comfy" and backends[0]["state"] == "idle"


async def test_readyz_with_a_healthy_backend(gateway: Served) -> None:
    async with gateway.client() as http:
        await http.post("/api/v1/tasks?wait=60", json={"workflow": graph()})
        ready = await http.get("/readyz", params={"backend": "required"})
    assert ready.status_code == 200
    assert ready.json()["backends"]["healthy"] == 1
