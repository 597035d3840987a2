"""Every bad job ends in one precise error, before anything runs on ComfyUI."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from comfyfleet.config import Settings
from comfyfleet.errors import (
    ComfyFleetError,
    ForbiddenURL,
    InputImageError,
    PayloadTooLarge,
    TemplateNotFound,
    TemplateParameterMissing,
    WorkflowFormatError,
    WorkflowValidationError,
)
from comfyfleet.execute import execute
from comfyfleet.jobs import InputImage, JobSpec
from comfyfleet.outputs.inline import InlineSink

from .pipeline_helpers import b64png, files_under, w1, w2

UI = {
    "last_node_id": 2,
    "last_link_id": 1,
    "nodes": [
        {
            "id": 1,
            "type": "EmptyImage",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0}],
            "widgets_values": [64, 64, 1, 0],
        },
        {
            "id": 2,
            "type": "SaveImage",
            "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
            "outputs": [],
            "widgets_values": ["ComfyUI"],
        },
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    "version": 0.4,
}

MISSING_MODEL = {
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
}


async def run(spec: JobSpec, client, settings: Settings, **kw) -> None:
    await execute(spec, client, InlineSink(), settings=settings, **kw)


async def nothing_ran(comfy) -> None:
    running, pending = comfy.queue.get_current_queue()
    assert running == pending == []
    assert comfy.number == 0, "nothing may have been posted to ComfyUI"


async def test_ui_format_graph_is_converted_and_runs(comfy, client, settings) -> None:
    result = await execute(JobSpec(workflow=UI), client, InlineSink(), settings=settings)
    assert [a.filename for a in result.artifacts] == ["ComfyUI_00001_.png"]


async def test_ui_format_graph_with_an_unknown_node(comfy, client, settings) -> None:
    graph = copy.deepcopy(UI)
    graph["nodes"][0]["type"] = "NoSuchNode"
    with pytest.raises(WorkflowFormatError, match="node 1 is a 'NoSuchNode', which this ComfyUI"):
        await run(JobSpec(workflow=graph), client, settings)
    await nothing_ran(comfy)


async def test_unknown_node(comfy, client, settings) -> None:
    graph = w1()
    graph["1"]["class_type"] = "NoSuchNodeClass"
    with pytest.raises(WorkflowValidationError) as err:
        await run(JobSpec(workflow=graph), client, settings)
    [problem] = err.value.node_errors
    assert (problem["node_id"], problem["class_type"]) == ("1", "NoSuchNodeClass")
    assert "does not exist in this ComfyUI" in problem["message"]
    await nothing_ran(comfy)


async def test_missing_model(comfy, client, settings) -> None:
    with pytest.raises(WorkflowValidationError) as err:
        await run(JobSpec(workflow=MISSING_MODEL), client, settings)
    [problem] = err.value.node_errors
    assert problem["node_id"] == "4"
    assert problem["class_type"] == "CheckpointLoaderSimple"
    assert problem["input_name"] == "ckpt_name"
    assert problem["message"] == (
        "Value not in list: ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in []"
    )
    assert err.value.status == 422
    await nothing_ran(comfy)


async def test_bad_widget_value(comfy, client, settings) -> None:
    graph = w1()
    graph["1"]["inputs"]["width"] = 100000
    with pytest.raises(WorkflowValidationError, match=r"node 1 \(EmptyImage\) input 'width'"):
        await run(JobSpec(workflow=graph), client, settings)
    await nothing_ran(comfy)


async def test_comfy_own_rejection_is_mapped(comfy, client) -> None:
    """The same checks when ComfyUI itself refuses (a graph submitted without `prepare`)."""
    graph = w1()
    graph["1"]["inputs"]["width"] = "abc"
    with pytest.raises(WorkflowValidationError) as err:
        await client.submit(graph)
    [problem] = err.value.node_errors
    assert (problem["node_id"], problem["class_type"], problem["input_name"]) == (
        "1",
        "EmptyImage",
        "width",
    )
    assert problem["type"] == "invalid_input_type"


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        ("%%% not base64 %%%", InputImageError, r"images\[0\] \(in.png\) is not valid base64"),
        (
            base64.b64encode(b"GIF89a but not really").decode(),
            InputImageError,
            r"images\[0\] \(in.png\) is not a readable image",
        ),
        ("http://169.254.169.254/latest/meta-data", ForbiddenURL, "non-public address"),
        ("file:///etc/passwd", ForbiddenURL, "only http"),
    ],
)
async def test_bad_image(comfy, client, settings, image, error, message) -> None:
    spec = JobSpec(workflow=w2(), images=[InputImage(name="in.png", image=image)])
    with pytest.raises(error, match=message):
        await run(spec, client, settings)
    await nothing_ran(comfy)
    assert files_under(comfy.input_dir) == []


async def test_oversized_image(comfy, client) -> None:
    spec = JobSpec(workflow=w2(), images=[InputImage(name="in.png", image=b64png())])
    with pytest.raises(PayloadTooLarge, match=r"images\[0\] \(in.png\) is larger than the 50"):
        await run(spec, client, Settings(max_input_bytes=50))
    await nothing_ran(comfy)


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    graph = w1(color=0)
    graph["1"]["inputs"]["width"] = "{{ SIZE }}"
    (folder / "square.json").write_text(json.dumps(graph))
    return folder


async def test_template_with_parameters_runs(comfy, client, settings, templates) -> None:
    spec = JobSpec(template="square", params={"SIZE": 32})
    result = await execute(spec, client, InlineSink(), templates_dir=templates, settings=settings)
    assert len(result.artifacts) == 1


async def test_unknown_template(comfy, client, settings, templates) -> None:
    with pytest.raises(
        TemplateNotFound, match="no template named 'circle' \\(available: square\\)"
    ):
        await run(JobSpec(template="circle"), client, settings, templates_dir=templates)
    await nothing_ran(comfy)


async def test_missing_template_parameter(comfy, client, settings, templates) -> None:
    with pytest.raises(TemplateParameterMissing, match="template 'square' needs a value for SIZE"):
        await run(JobSpec(template="square"), client, settings, templates_dir=templates)
    await nothing_ran(comfy)


async def test_every_error_has_a_payload(client, settings) -> None:
    graph = w1()
    graph["1"]["class_type"] = "NoSuchNodeClass"
    with pytest.raises(ComfyFleetError) as err:
        await run(JobSpec(workflow=graph), client, settings)
    body = err.value.to_dict()
    assert body["code"] == "workflow_invalid"
    assert body["details"]["node_errors"][0]["node_id"] == "1"
