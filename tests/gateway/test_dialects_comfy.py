"""The gateway's ComfyUI-compatible face: a plain ComfyUI API client (written the way
ComfyUI's own script_examples/websockets_api_example.py is: POST /prompt, the websocket until
``executing {node: null}`` for its prompt, /history, /view) runs unchanged against it."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable

from PIL import Image
from websockets.sync.client import connect

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app

from .gateway_helpers import (
    Served,
    comfy_gateway,  # noqa: F401  (the `gateway` fixture)
    serve,
)

GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0x3366FF},
    },
    "2": {
        "class_type": "FleetTestSlow",
        "inputs": {"image": ["1", 0], "steps": 3, "seconds_per_step": 0.02},
    },
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "plain"}},
}


# --- a plain ComfyUI API client (knows nothing of comfyfleet) --------------------------------
def queue_prompt(server: str, prompt: dict, client_id: str) -> dict:
    data = json.dumps({"prompt": prompt, "client_id": client_id}).encode("utf-8")
    req = urllib.request.Request(f"http://{server}/prompt", data=data)
    return json.loads(urllib.request.urlopen(req).read())


def get_image(server: str, filename: str, subfolder: str, folder_type: str) -> bytes:
    query = urllib.parse.urlencode(
        {"filename": filename, "subfolder": subfolder, "type": folder_type}
    )
    with urllib.request.urlopen(f"http://{server}/view?{query}") as response:
        return response.read()


def get_history(server: str, prompt_id: str) -> dict:
    with urllib.request.urlopen(f"http://{server}/history/{prompt_id}") as response:
        return json.loads(response.read())


def get_images(server: str, prompt: dict) -> tuple[dict[str, list[bytes]], list[dict]]:
    client_id = str(uuid.uuid4())
    seen = []
    with connect(f"ws://{server}/ws?clientId={client_id}") as ws:
        prompt_id = queue_prompt(server, prompt, client_id)["prompt_id"]
        while True:
            out = ws.recv(timeout=60)
            if isinstance(out, str):
                message = json.loads(out)
                seen.append(message)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["node"] is None and data["prompt_id"] == prompt_id:
                        break  # execution is done
    history = get_history(server, prompt_id)[prompt_id]
    output_images = {}
    for node_id, node_output in history["outputs"].items():
        images_output = []
        for image in node_output.get("images", []):
            images_output.append(
                get_image(server, image["filename"], image["subfolder"], image["type"])
            )
        output_images[node_id] = images_output
    return output_images, seen


# --- the tests --------------------------------------------------------------------------------
def address(served: Served) -> str:
    return served.url.removeprefix("http://")


async def test_plain_comfyui_client_runs_unchanged(gateway: Served) -> None:
    images, seen = await asyncio.to_thread(get_images, address(gateway), GRAPH)
    (png,) = images["3"]
    assert Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0)) == (0x33, 0x66, 0xFF)
    kinds = [m["type"] for m in seen]
    assert kinds[0] == "status" and "execution_start" in kinds
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    steps = [m["data"]["value"] for m in seen if m["type"] == "progress"]
    assert steps and steps[-1] == 3  # the slow node's steps reached the client
    (task,) = (await gateway.gateway.queue.list()).items
    assert task.status == "succeeded" and task.payload["source"] == "comfy"


async def test_invalid_prompt_gets_comfyui_node_errors_and_no_task(gateway: Served) -> None:
    bad = {**GRAPH, "1": {**GRAPH["1"], "inputs": {**GRAPH["1"]["inputs"], "width": 0}}}
    async with gateway.client() as http:
        response = await http.post("/prompt", json={"prompt": bad, "client_id": "c"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    node = body["node_errors"]["1"]
    assert node["class_type"] == "EmptyImage" and node["dependent_outputs"] == ["3"]
    (error,) = node["errors"]
    assert error["extra_info"]["input_name"] == "width"
    assert "smaller than min" in error["message"]
    assert await gateway.count_tasks() == 0


async def test_unknown_class_and_no_outputs_like_comfyui(gateway: Served) -> None:
    async with gateway.client() as http:
        unknown = await http.post(
            "/prompt",
            json={
                "prompt": {
                    "1": {"class_type": "NoSuchNode", "inputs": {}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
                }
            },
        )
        none = await http.post("/prompt", json={"prompt": {"1": GRAPH["1"]}})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == (
        "Cannot execute because node NoSuchNode does not exist."
    )
    assert none.status_code == 400 and none.json()["error"]["type"] == "prompt_no_outputs"


async def test_answer_history_queue_object_info(gateway: Served) -> None:
    async with gateway.client() as http:
        answer = (await http.post("/prompt", json={"prompt": GRAPH, "prompt_id": "mine-1"})).json()
        assert answer["prompt_id"] == "mine-1" and answer["node_errors"] == {}
        assert isinstance(answer["number"], int)
        queue = (await http.get("/queue")).json()
        assert set(queue) == {"queue_running", "queue_pending"}
        rows = queue["queue_running"] + queue["queue_pending"]
        finished = (await http.get("/api/v1/tasks/mine-1?wait=30")).json()
        history = (await http.get("/history/mine-1")).json()
        listing = (await http.get("/history")).json()
        unknown = (await http.get("/history/nope")).json()
        info = (await http.get("/object_info")).json()
        one = (await http.get("/object_info/EmptyImage")).json()
        missing = await http.get("/view", params={"filename": "x.png", "type": "input"})
    assert finished["status"] == "succeeded"
    assert [row[1] for row in rows] in ([], ["mine-1"])  # it may have finished already
    entry = history["mine-1"]
    assert entry["prompt"][1] == "mine-1" and entry["prompt"][2] == GRAPH
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    (image,) = entry["outputs"]["3"]["images"]
    assert image["subfolder"] == "mine-1" and image["type"] == "output"
    assert "mine-1" in listing and unknown == {}
    assert "EmptyImage" in info and list(one) == ["EmptyImage"]
    assert missing.status_code == 404


async def test_websocket_needs_a_key_when_the_gateway_has_keys(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["reader:read"])
    async with serve(create_app(settings)) as served:

        def attempt(suffix: str) -> str:
            try:
                with connect(f"ws://{address(served)}/ws?clientId=x{suffix}") as ws:
                    return json.loads(ws.recv(timeout=10))["type"]
            except Exception as exc:
                return type(exc).__name__

        refused = await asyncio.to_thread(attempt, "")
        admitted = await asyncio.to_thread(attempt, "&token=reader")
    assert refused != "status" and admitted == "status"


def test_plain_client_urllib_errors_are_http_errors() -> None:
    """Guard for the client above: urllib raises on a 4xx (so a refused prompt is visible)."""
    assert issubclass(urllib.error.HTTPError, Exception)


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), color).save(buf, "PNG")
    return buf.getvalue()


async def test_uploaded_image_feeds_the_prompt_that_names_it(gateway: Served) -> None:
    async with gateway.client() as http:
        first = await http.post(
            "/upload/image", files={"image": ("src.png", png((10, 200, 30)))}, data={}
        )
        again = await http.post("/upload/image", files={"image": ("src.png", png((10, 200, 30)))})
        other = await http.post("/upload/image", files={"image": ("src.png", png((1, 2, 3)))})
        escape = await http.post(
            "/upload/image",
            files={"image": ("x.png", png((1, 2, 3)))},
            data={"subfolder": "../../etc"},
        )
    assert first.json() == {"name": "src.png", "subfolder": "", "type": "input"}
    assert again.json()["name"] == "src.png"  # same bytes: the same file
    assert other.json()["name"] == "src (1).png"
    assert escape.status_code == 400
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "up"}},
    }
    images, _ = await asyncio.to_thread(get_images, address(gateway), graph)
    (out,) = images["3"]
    pixel = Image.open(io.BytesIO(out)).convert("RGB").getpixel((0, 0))
    assert all(abs(a - b) <= 1 for a, b in zip(pixel, (245, 55, 225), strict=True)), pixel


async def test_interrupt_a_running_prompt_by_id(gateway: Served) -> None:
    slow = {**GRAPH, "2": {**GRAPH["2"], "inputs": {**GRAPH["2"]["inputs"], "steps": 500}}}
    async with gateway.client() as http:
        prompt_id = (await http.post("/prompt", json={"prompt": slow})).json()["prompt_id"]
        async with asyncio.timeout(30):
            while (await http.get(f"/api/v1/tasks/{prompt_id}")).json()["status"] != "running":
                await gateway.gateway.queue.wait_finished(prompt_id, 0.05)
        assert (await http.get("/prompt")).json()["exec_info"]["queue_remaining"] >= 1
        assert (await http.post("/interrupt", json={"prompt_id": prompt_id})).status_code == 200
        assert (await http.post("/interrupt")).status_code == 200  # no id: nothing to stop
        task = (await http.get(f"/api/v1/tasks/{prompt_id}?wait=30")).json()
        history = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    assert task["status"] == "cancelled"
    assert history["status"]["status_str"] == "error"
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


async def test_queue_delete_removes_pending_prompts_only(
    make_settings: Callable[..., Settings],
) -> None:
    async with serve(create_app(make_settings())) as served, served.client() as http:  # no backend
        first = (await http.post("/prompt", json={"prompt": GRAPH})).json()["prompt_id"]
        second = (await http.post("/prompt", json={"prompt": GRAPH})).json()["prompt_id"]
        pending = (await http.get("/queue")).json()["queue_pending"]
        assert [row[1] for row in pending] == [first, second]  # oldest first, as ComfyUI
        assert (await http.post("/queue", json={"delete": [first, "unknown"]})).status_code == 200
        clear = await http.post("/queue", json={"clear": True})
        after = (await http.get("/queue")).json()["queue_pending"]
        stats = (await http.get("/system_stats")).json()
        cancelled = (await served.gateway.queue.get(first)).status
    assert clear.status_code == 400 and clear.json()["error"]["details"]["field"] == "clear"
    assert [row[1] for row in after] == [second]
    assert cancelled == "cancelled"
    assert stats["devices"] == [] and stats["system"]["comfyui_version"].startswith("comfyfleet")
