"""An inline workflow that no known backend could run is refused at submit with a precise 422
(node id, class, input) and leaves no task behind; a valid one is still accepted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app

from .gateway_helpers import (
    WORKFLOW,
    Served,
    comfy_gateway,  # noqa: F401  (the `gateway` fixture)
    serve,
)


async def submit(served: Served, workflow: dict[str, Any]) -> Any:
    async with served.client() as http:
        response = await http.post("/api/v1/tasks", json={"workflow": workflow})
        listing = (await http.get("/api/v1/tasks")).json()
    return response, listing


async def test_unknown_class_is_422_naming_node_and_class(gateway: Served) -> None:
    response, listing = await submit(gateway, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "workflow_invalid"
    assert "node 1 (NoSuchNode)" in body["message"]
    (error,) = body["details"]["node_errors"]
    assert (error["node_id"], error["class_type"], error["type"]) == (
        "1",
        "NoSuchNode",
        "unknown_class_type",
    )
    assert listing["items"] == []
    assert await gateway.count_tasks() == 0


async def test_out_of_range_input_is_422_naming_node_class_and_input(gateway: Served) -> None:
    workflow = {**WORKFLOW, "1": {**WORKFLOW["1"], "inputs": {**WORKFLOW["1"]["inputs"]}}}
    workflow["1"]["inputs"]["width"] = -5
    response, listing = await submit(gateway, workflow)
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "workflow_invalid"
    assert "node 1 (EmptyImage) input 'width'" in body["message"]
    (error,) = body["details"]["node_errors"]
    assert (error["node_id"], error["class_type"], error["input_name"]) == (
        "1",
        "EmptyImage",
        "width",
    )
    assert error["type"] == "value_smaller_than_min"
    assert listing["items"] == []
    assert await gateway.count_tasks() == 0


async def test_a_valid_workflow_is_still_accepted(gateway: Served) -> None:
    response, listing = await submit(gateway, WORKFLOW)
    assert response.status_code == 201
    assert [task["id"] for task in listing["items"]] == [response.json()["id"]]


async def test_unknown_catalogue_accepts_as_before(
    make_settings: Callable[..., Settings],
) -> None:
    """No backend reachable yet: nothing to check against, so the task is taken."""
    async with serve(create_app(make_settings())) as served:
        response, _ = await submit(served, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert response.status_code == 201
