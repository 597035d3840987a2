"""The API routes the dashboard's pages read (templates, models, a task's inputs, retry) and the
data embedded in its first HTML response, over a real gateway and the ComfyUI test server."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.routes.models import combo_options, loader_models
from comfyfleet.gateway.routes.task_actions import public_inputs
from comfyfleet.gateway.routes.templates import template_params
from comfyfleet.testing import ComfyTestServer

from .gateway_helpers import WORKFLOW, Served, serve

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8ffff3f0005fe02fea7d6a4b30000000049454e44ae426082"
    )
).decode()


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer, tmp_path: Path
) -> AsyncIterator[Served]:
    comfy_server.add_model("checkpoints", "base.safetensors")
    settings = make_settings(
        backends=[f"comfy={comfy_server.url}"],
        models="org/vae-repo:split/vae.safetensors:vae",
    )
    async with serve(create_app(settings)) as served:
        yield served


async def test_retry_runs_the_same_request_as_a_new_task(gateway: Served) -> None:
    async with gateway.client() as http:
        old = (
            await http.post("/api/v1/tasks?wait=60", json={"workflow": WORKFLOW, "priority": 3})
        ).json()
        retried = await http.post(f"/api/v1/tasks/{old['id']}/retry")
        assert retried.status_code == 201
        new = retried.json()
        done = (await http.get(f"/api/v1/tasks/{new['id']}?wait=60")).json()
        inputs = (await http.get(f"/api/v1/tasks/{new['id']}/inputs")).json()
        missing = await http.post("/api/v1/tasks/nope/retry")
    assert new["id"] != old["id"] and new["priority"] == 3
    assert done["status"] == "succeeded"
    assert inputs["retry_of"] == old["id"]
    assert inputs["spec"]["workflow"] == WORKFLOW
    assert missing.status_code == 404


async def test_retry_of_an_unfinished_task_is_a_conflict(gateway: Served) -> None:
    async with gateway.client() as http:
        await http.post("/api/v1/backends/comfy/drain")
        queued = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()
        answer = await http.post(f"/api/v1/tasks/{queued['id']}/retry")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "conflict"
    assert await gateway.count_tasks() == 1


def test_inputs_show_urls_without_their_secrets() -> None:
    payload = {
        "spec": {
            "workflow": WORKFLOW,
            "images": [{"image": "https://u:p@bucket.example:9000/a.png?X-Amz-Signature=s3cret"}],
            "models": [{"url": "https://hub.example/m.safetensors?token=t0k", "folder": "loras"}],
        },
        "source": "native",
    }
    spec = public_inputs(payload)["spec"]
    assert spec["images"][0]["image"] == "https://bucket.example:9000/a.png"
    assert spec["models"][0]["url"] == "https://hub.example/m.safetensors"
    assert "s3cret" in payload["spec"]["images"][0]["image"]  # the stored task is unchanged


async def test_inputs_show_images_without_their_bytes(gateway: Served) -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "i"}},
    }
    body = {"workflow": workflow, "images": [{"name": "dot.png", "image": PNG}], "seed": 7}
    async with gateway.client() as http:
        task = (await http.post("/api/v1/tasks", json=body)).json()
        inputs = (await http.get(f"/api/v1/tasks/{task['id']}/inputs")).json()
    assert inputs["source"] == "native"
    assert inputs["spec"]["seed"] == 7
    assert inputs["spec"]["images"] == [
        {"name": "dot.png", "image": f"<{len(PNG)} characters of base64>"}
    ]


async def test_models_per_backend_and_the_manifest(gateway: Served) -> None:
    async with gateway.client() as http:
        models = (await http.get("/api/v1/models")).json()
    comfy = models["backends"][0]
    assert comfy["name"] == "comfy" and comfy["known"] is True
    simple = [m for m in comfy["loaders"] if m["class_type"] == "CheckpointLoaderSimple"]
    assert simple == [
        {
            "class_type": "CheckpointLoaderSimple",
            "input": "ckpt_name",
            "options": ["base.safetensors"],
        }
    ]
    assert models["manifest"] == [
        {
            "name": "vae.safetensors",
            "folder": "vae",
            "source": "hf://org/vae-repo/split/vae.safetensors",
        }
    ]


def test_combo_options_in_both_spellings() -> None:
    assert combo_options([["a", "b"], {}]) == ["a", "b"]
    assert combo_options(["COMBO", {"options": ["c"]}]) == ["c"]
    assert combo_options(["INT", {"default": 1}]) is None
    info = {
        "UNETLoader": {"input": {"required": {"unet_name": ["COMBO", {"options": ["u.sft"]}]}}},
        "KSampler": {"input": {"required": {"sampler_name": [["euler"], {}]}}},
    }
    assert [(m.class_type, m.options) for m in loader_models(info)] == [("UNETLoader", ["u.sft"])]


def test_template_parameters_are_typed_by_default_and_place() -> None:
    text = (
        '{"1": {"inputs": {"text": "a photo of {{ SUBJECT }}", "steps": {{ STEPS | 20 }},'
        ' "cfg": "{{ CFG | 7.5 }}", "flag": {{ TILED | false }}, "extra": {{ EXTRA }},'
        ' "seed": "{{ SEED }}"}}}'
    )
    params = {p.name: (p.type, p.default, p.required, p.builtin) for p in template_params(text)}
    assert params == {
        "SUBJECT": ("string", None, True, False),
        "STEPS": ("integer", 20, False, False),
        "CFG": ("number", 7.5, False, False),
        "TILED": ("boolean", False, False, False),
        "EXTRA": ("json", None, True, False),
        "SEED": ("integer", None, False, True),
    }


async def test_embedded_data_cannot_close_its_script_element(gateway: Served) -> None:
    label = "</script><script>alert(1)</script>"
    async with gateway.client() as http:
        created = await http.post("/api/v1/tasks", json={"workflow_id": label, "payload": WORKFLOW})
        assert created.status_code == 201
        html = (await http.get("/")).text
    assert label not in html
    boot = re.search(r'<script type="application/json" id="boot">(.*?)</script>', html, re.S)
    assert boot is not None and "\\u003c/script\\u003e" in boot.group(1)
