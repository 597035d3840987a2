"""``POST /api/v1/tasks`` with ComfyUI's own body: a ``prompt`` that is an object is the API
graph (native and RunPod bodies); a string stays the text prompt."""

from __future__ import annotations

from .gateway_helpers import (
    WORKFLOW,
    Served,
    comfy_gateway,  # noqa: F401  (the `gateway` fixture)
)


async def test_comfyui_body_runs_as_a_task(gateway: Served) -> None:
    body = {"prompt": WORKFLOW, "client_id": "c-1", "extra_data": {}, "front": False}
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks?wait=30", json=body)
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "succeeded" and task["source"] == "native"
    assert [a["filename"] for a in task["result"]["artifacts"]] == ["t_00001_.png"]


async def test_comfyui_prompt_id_becomes_the_task_id(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post(
            "/api/v1/tasks", json={"prompt": WORKFLOW, "prompt_id": "from-comfy-client-1"}
        )
    assert response.status_code == 201, response.text
    assert response.json()["id"] == "from-comfy-client-1"


async def test_runpod_input_with_object_prompt(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks?wait=30", json={"input": {"prompt": WORKFLOW}})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"


async def test_string_prompt_is_still_text(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post(
            "/api/v1/tasks", json={"workflow": WORKFLOW, "prompt": "a lighthouse"}
        )
        assert response.status_code == 201, response.text
        stored = await gateway.gateway.queue.get(response.json()["id"])
    assert stored.payload["spec"]["prompt"] == "a lighthouse"
    assert stored.payload["spec"]["workflow"] == WORKFLOW


async def test_object_prompt_invalid_graph_is_422_naming_node_and_input(gateway: Served) -> None:
    bad = {**WORKFLOW, "1": {**WORKFLOW["1"], "inputs": {**WORKFLOW["1"]["inputs"], "width": 0}}}
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks", json={"prompt": bad})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "node 1 (EmptyImage) input 'width'" in error["message"]
    assert await gateway.count_tasks() == 0


async def test_object_prompt_and_workflow_is_400(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks", json={"prompt": WORKFLOW, "workflow": WORKFLOW})
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "prompt"
    assert await gateway.count_tasks() == 0
