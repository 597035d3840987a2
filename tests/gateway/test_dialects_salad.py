"""Salad comfyui-api's ``POST /prompt`` body gets Salad's answer shape from the gateway (the
shapes of SaladTechnologies/comfyui-api's src/server.ts: the body echoed with ``id``,
``prompt``, ``images`` as base64, ``filenames``, ``stats``; ``{error, location}`` on errors)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from .gateway_helpers import (
    Served,
    comfy_gateway,  # noqa: F401  (the `gateway` fixture)
)

GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0xFF0000},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "salad"}},
}


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


async def test_salad_body_gets_salad_answer(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post("/prompt", json={"prompt": GRAPH, "id": "salad-job-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"prompt", "id", "images", "filenames", "stats"}
    assert body["id"] == "salad-job-1" and body["prompt"] == GRAPH
    assert body["filenames"] == ["salad_00001_.png"]
    (image,) = body["images"]
    picture = decoded(image)
    assert picture.format == "PNG" and picture.size == (16, 8)
    assert picture.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    task = await gateway.gateway.queue.get("salad-job-1")
    assert task.payload["source"] == "salad"


async def test_convert_output_to_webp(gateway: Served) -> None:
    body = {"prompt": GRAPH, "id": "salad-webp", "convert_output": {"format": "webp"}}
    async with gateway.client() as http:
        answer = (await http.post("/prompt", json=body)).json()
    assert answer["filenames"] == ["salad_00001_.webp"]
    assert answer["convert_output"] == {"format": "webp"}  # the body is echoed
    assert decoded(answer["images"][0]).format == "WEBP"


async def test_webhook_answers_202_at_once(gateway: Served) -> None:
    body = {"prompt": GRAPH, "id": "salad-hook", "webhook_v2": "http://127.0.0.1:9/hook"}
    async with gateway.client() as http:
        response = await http.post("/prompt", json=body)
    assert response.status_code == 202
    assert response.json() == {**body, "status": "ok"}
    task = await gateway.gateway.queue.get("salad-hook")
    assert task.webhook_url == "http://127.0.0.1:9/hook"


async def test_salad_errors_have_salad_shape(gateway: Served) -> None:
    bad = {**GRAPH, "1": {**GRAPH["1"], "inputs": {**GRAPH["1"]["inputs"], "width": 0}}}
    no_save = {"1": GRAPH["1"]}
    async with gateway.client() as http:
        invalid = await http.post("/prompt", json={"prompt": bad, "id": "s-bad"})
        nothing = await http.post("/prompt", json={"prompt": no_save, "id": "s-none"})
        fmt = await http.post(
            "/prompt", json={"prompt": GRAPH, "id": "s-fmt", "convert_output": {"format": "gif"}}
        )
    assert invalid.status_code == 400
    assert invalid.json()["location"] == "prompt.1.inputs.width"
    assert "node 1 (EmptyImage) input 'width'" in invalid.json()["error"]
    assert nothing.status_code == 400 and nothing.json() == {
        "error": 'Prompt must contain a node with a "filename_prefix" input, such as "SaveImage"',
        "location": "prompt",
    }
    assert fmt.status_code == 400 and fmt.json()["location"] == "convert_output.format"
    assert await gateway.count_tasks() == 0


async def test_comfyui_body_without_salad_keys_is_comfyui(gateway: Served) -> None:
    async with gateway.client() as http:
        body = (await http.post("/prompt", json={"prompt": GRAPH})).json()
    assert set(body) == {"prompt_id", "number", "node_errors"}
