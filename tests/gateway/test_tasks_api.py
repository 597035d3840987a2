"""Submitting (three body shapes), reading, listing and idempotency, on both queue engines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer

from .gateway_helpers import ENGINES, WORKFLOW, Served, serve


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_native_body_is_queued_with_its_options(gateway: Served) -> None:
    body = {
        "workflow": WORKFLOW,
        "prompt": "a cat",
        "seed": 7,
        "priority": 5,
        "max_attempts": 2,
        "timeout": 90,
    }
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks", json=body)
    assert response.status_code == 201
    task = response.json()
    assert task["status"] == "queued"
    assert task["priority"] == 5
    assert task["max_attempts"] == 2
    assert task["source"] == "native"
    assert task["position"] == 1
    assert response.headers["location"] == task["links"]["self"]
    stored = await gateway.gateway.queue.get(task["id"])
    assert stored.timeout_seconds == 90
    assert stored.payload["spec"]["prompt"] == "a cat"
    assert stored.payload["spec"]["seed"] == 7
    assert stored.payload["spec"]["workflow"] == WORKFLOW
    assert "priority" not in stored.payload["spec"]


async def test_seed_004_body(gateway: Served) -> None:
    body = {"workflow_id": "text_to_image_v1", "priority": 5, "payload": WORKFLOW}
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks", json=body)
        assert response.status_code == 201
        task = (await http.get(response.json()["links"]["self"])).json()
    assert task["id"] == response.json()["id"]
    assert task["workflow_id"] == "text_to_image_v1"
    assert task["source"] == "seed"
    assert task["priority"] == 5
    stored = await gateway.gateway.queue.get(task["id"])
    assert stored.payload["spec"]["workflow"] == WORKFLOW


async def test_runpod_body_with_the_workers_input_formats(gateway: Served) -> None:
    async with gateway.client() as http:
        native = await http.post(
            "/api/v1/tasks",
            json={"input": {"workflow": WORKFLOW}, "policy": {"executionTimeout": 120000}},
        )
        ephemeral = await http.post(  # seed 002: bare base64 images, seeds randomised
            "/api/v1/tasks", json={"input": {"workflow": WORKFLOW, "images": ["aGVsbG8="]}}
        )
    assert native.status_code == ephemeral.status_code == 201
    assert native.json()["source"] == "runpod"
    stored = await gateway.gateway.queue.get(native.json()["id"])
    assert stored.timeout_seconds == 120
    second = await gateway.gateway.queue.get(ephemeral.json()["id"])
    assert second.payload["spec"]["seed"] == "random"
    assert second.payload["spec"]["images"][0]["image"] == "aGVsbG8="


async def test_idempotency_key_returns_the_same_task(gateway: Served) -> None:
    body = {"workflow": WORKFLOW, "idempotency_key": "order-42"}
    async with gateway.client() as http:
        first = await http.post("/api/v1/tasks", json=body)
        again = await http.post("/api/v1/tasks", json=body)
        by_header = await http.post(
            "/api/v1/tasks", json={"workflow": WORKFLOW}, headers={"Idempotency-Key": "order-42"}
        )
    assert first.status_code == 201
    assert again.status_code == by_header.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == again.json()["id"] == by_header.json()["id"]
    assert await gateway.count_tasks() == 1


async def test_idempotency_key_reused_for_another_request_is_a_conflict(gateway: Served) -> None:
    headers = {"Idempotency-Key": "order-7"}
    async with gateway.client() as http:
        first = await http.post("/api/v1/tasks", json={"workflow": WORKFLOW}, headers=headers)
        other = await http.post(
            "/api/v1/tasks", json={"workflow": WORKFLOW, "priority": 3}, headers=headers
        )
        in_body = await http.post(
            "/api/v1/tasks",
            json={"workflow": WORKFLOW, "prompt": "x", "idempotency_key": "order-7"},
        )
        # the same request, spelled with other key order and spacing: a replay
        respelled = await http.post(
            "/api/v1/tasks?wait=0",
            content=json.dumps({"workflow": WORKFLOW}, indent=2).encode(),
            headers={**headers, "Content-Type": "application/json"},
        )
    assert first.status_code == 201
    assert other.status_code == in_body.status_code == 409
    error = other.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"] == (
        f"idempotency key 'order-7' was already used for another request (task "
        f"{first.json()['id']}); send that request again unchanged, or use a new key for this one"
    )
    assert error["details"] == {"idempotency_key": "order-7", "task_id": first.json()["id"]}
    assert respelled.status_code == 200 and respelled.json()["id"] == first.json()["id"]
    assert await gateway.count_tasks() == 1


async def test_get_shows_position_in_priority_order(gateway: Served) -> None:
    async with gateway.client() as http:
        low = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()
        high = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "priority": 9})).json()
        low_now = (await http.get(f"/api/v1/tasks/{low['id']}")).json()
        high_now = (await http.get(f"/api/v1/tasks/{high['id']}")).json()
        missing = await http.get("/api/v1/tasks/nope")
    assert (high_now["position"], low_now["position"]) == (1, 2)
    assert low_now["attempts"] == 0 and low_now["result"] is None
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_list_filters_and_paginates_with_next_links(gateway: Served) -> None:
    async with gateway.client() as http:
        ids = []
        for priority in (1, 2, 1, 2, 1):
            response = await http.post(
                "/api/v1/tasks", json={"workflow": WORKFLOW, "priority": priority}
            )
            ids.append(response.json()["id"])
        cancelled = await http.post(f"/api/v1/tasks/{ids[0]}/cancel")
        assert cancelled.json()["status"] == "cancelled"

        seen, url = [], "/api/v1/tasks?limit=2"
        while url:
            page = (await http.get(url)).json()
            seen += [item["id"] for item in page["items"]]
            url = page["next"]
        assert seen == ids[::-1]

        ones = (await http.get("/api/v1/tasks", params={"priority": 1})).json()
        assert [t["id"] for t in ones["items"]] == [ids[4], ids[2], ids[0]]
        queued = (await http.get("/api/v1/tasks", params={"status": "queued"})).json()
        assert ids[0] not in [t["id"] for t in queued["items"]] and len(queued["items"]) == 4
        created = (await http.get(f"/api/v1/tasks/{ids[2]}")).json()["created_at"]
        after = (await http.get("/api/v1/tasks", params={"created_after": created})).json()
        assert {t["id"] for t in after["items"]} <= set(ids[3:])
        bad = await http.get("/api/v1/tasks", params={"status": "done"})
        assert bad.status_code == 400


async def test_cancel_a_queued_task_it_never_runs(gateway: Served) -> None:
    async with gateway.client() as http:
        task = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()
        cancelled = await http.post(f"/api/v1/tasks/{task['id']}/cancel")
        again = await http.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert await gateway.gateway.queue.claim("agent", 30) is None


async def test_cancel_a_running_task_asks_its_agent_to_stop(gateway: Served) -> None:
    queue = gateway.gateway.queue
    async with gateway.client() as http:
        task = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()
        claimed = await queue.claim("remote-agent", 30)
        assert claimed is not None and claimed.id == task["id"]
        response = await http.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    answer = await queue.heartbeat(task["id"], "remote-agent", 30)
    assert answer.cancel_requested


@pytest.fixture
async def backed(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer
) -> AsyncIterator[Served]:
    """A gateway whose local agent runs tasks on the ComfyUI test server."""
    async with serve(create_app(make_settings(backends=[f"comfy={comfy_server.url}"]))) as served:
        yield served


def slow_then(last: dict[str, Any]) -> dict[str, Any]:
    """EmptyImage -> FleetTestSlow (4 progress steps) -> ``last`` -> SaveImage."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": 4, "seconds_per_step": 0.02},
        },
        "3": {**last, "inputs": {"image": ["2", 0], **last.get("inputs", {})}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "p"}},
    }


async def test_a_finished_task_reads_done_at_100_percent(backed: Served) -> None:
    graph = slow_then({"class_type": "ImageInvert"})
    async with backed.client() as http:
        done = await http.post("/api/v1/tasks?wait=60", json={"workflow": graph})
        again = await http.get(done.json()["links"]["self"])
    assert done.json()["status"] == "succeeded"
    assert (
        done.json()["progress"] == again.json()["progress"] == {"stage": "done", "percent": 100.0}
    )


async def test_a_failed_task_reads_the_stage_it_died_in(backed: Served) -> None:
    graph = slow_then({"class_type": "FleetTestFail", "inputs": {"message": "on purpose"}})
    async with backed.client() as http:
        body = {"workflow": graph, "max_attempts": 1}
        failed = (await http.post("/api/v1/tasks?wait=60", json=body)).json()
    assert failed["status"] == "failed"
    progress = failed["progress"]
    assert (progress["stage"], progress["node"], progress["class_type"]) == (
        "running",
        "3",
        "FleetTestFail",
    )
