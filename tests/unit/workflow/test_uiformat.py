"""UI-format workflows (ComfyUI's "Save") converted the way the frontend's Export (API) does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from wf_helpers import load

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow import is_ui_workflow, parse_workflow, ui_to_api
from comfyfleet.workflow.uiformat import widget_slots


def test_default_workflow_converts_to_its_api_export(object_info: dict[str, Any]) -> None:
    ui = load("ui_txt2img.json")
    assert is_ui_workflow(ui)
    graph = parse_workflow(ui, object_info)
    assert graph == load("txt2img_api.json")
    # The KSampler's "randomize" (control_after_generate) value is not an input.
    assert "control_after_generate" not in graph["3"]["inputs"]


def test_reroute_primitive_bypass_mute_and_notes(object_info: dict[str, Any]) -> None:
    graph = ui_to_api(load("ui_extras.json"), object_info)
    # Notes, the Reroute, the PrimitiveNode, the bypassed and the muted nodes are gone.
    assert sorted(graph, key=int) == ["3", "4", "5", "6", "7", "8", "9", "16"]
    # Through the Reroute to the checkpoint's CLIP output.
    assert graph["6"]["inputs"] == {"text": "a lighthouse at dusk", "clip": ["4", 1]}
    assert graph["6"]["_meta"] == {"title": "Positive"}
    # The PrimitiveNode's value is the widget value; its link is dropped.
    assert graph["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 1}
    # Widget inputs with no link (new frontend) keep their widget values.
    assert graph["3"]["inputs"] == {
        "seed": 42,
        "steps": 25,
        "cfg": 6.5,
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "denoise": 1,
        "model": ["4", 0],
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    # The bypassed LatentUpscaleBy passes its LATENT input straight through.
    assert graph["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert graph["9"]["inputs"] == {"filename_prefix": "lighthouse", "images": ["8", 0]}
    # A link from a muted node is dropped, as the frontend does.
    assert graph["16"]["inputs"] == {}


def test_widget_slots_follow_the_frontend(object_info: dict[str, Any]) -> None:
    slots, tail = widget_slots(object_info["KSampler"])
    assert slots[:2] == ["seed", "<control_after_generate>"]
    assert slots[2:] == ["steps", "cfg", "sampler_name", "scheduler", "denoise"]
    assert tail == 0
    assert widget_slots(object_info["LoadImage"]) == (["image", "<upload>"], 1)
    assert widget_slots(object_info["KSamplerAdvanced"])[0][:3] == [
        "add_noise",
        "noise_seed",
        "<control_after_generate>",
    ]
    # forceInput and link-typed inputs are sockets, not widgets.
    assert widget_slots(object_info["VAEDecode"]) == ([], 0)


def test_load_image_with_or_without_upload_value(object_info: dict[str, Any]) -> None:
    for values in (["cat.png", "image"], ["cat.png"]):
        ui = _one_node("LoadImage", values)
        assert ui_to_api(ui, object_info)["1"]["inputs"] == {"image": "cat.png"}


def test_list_widget_values_are_wrapped_so_they_do_not_read_as_links(
    object_info: dict[str, Any],
) -> None:
    graph = ui_to_api(_one_node("CheckpointLoaderSimple", [["a", 1]]), object_info)
    assert graph["1"]["inputs"]["ckpt_name"] == {"__value__": ["a", 1]}


def test_widgets_saved_by_name(object_info: dict[str, Any]) -> None:
    ui = _one_node("EmptyImage", {"width": 64, "height": 32, "batch_size": 1, "color": 0})
    assert ui_to_api(ui, object_info)["1"]["inputs"] == {
        "width": 64,
        "height": 32,
        "batch_size": 1,
        "color": 0,
    }


def test_widget_count_mismatch_is_refused(object_info: dict[str, Any]) -> None:
    ui = load("ui_txt2img.json")
    ksampler = next(n for n in ui["nodes"] if n["id"] == 3)
    ksampler["widgets_values"] = [156680208700286, 20, 8, "euler", "normal", 1]  # no control
    with pytest.raises(WorkflowFormatError) as info:
        ui_to_api(ui, object_info)
    assert info.value.message.startswith(
        "cannot convert this UI-format workflow faithfully (node 3 (KSampler) has 6 widget "
        "values but this ComfyUI's KSampler has 7 widgets;"
    )
    assert "Workflow → Export (API)" in info.value.message
    assert info.value.details == {"node_id": "3", "class_type": "KSampler"}


def test_unknown_class_is_refused(object_info: dict[str, Any]) -> None:
    with pytest.raises(WorkflowFormatError, match="node 1 is a 'NoSuchNodeClass', which this"):
        ui_to_api(_one_node("NoSuchNodeClass", [1]), object_info)


def test_group_nodes_are_refused(object_info: dict[str, Any]) -> None:
    ui = load("ui_txt2img.json")
    with_group = copy.deepcopy(ui) | {"extra": {"groupNodes": {"g": {}}}}
    with pytest.raises(WorkflowFormatError, match=r"faithfully \(it uses group nodes\)"):
        ui_to_api(with_group, object_info)


def test_links_as_objects_schema_1(object_info: dict[str, Any]) -> None:
    ui = load("ui_txt2img.json")
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    ui["links"] = [dict(zip(keys, row, strict=True)) for row in ui["links"]]
    assert ui_to_api(ui, object_info) == load("txt2img_api.json")


def _one_node(class_type: str, values: Any) -> dict[str, Any]:
    node = {"id": 1, "type": class_type, "mode": 0, "widgets_values": values}
    return {"nodes": [node], "links": []}
