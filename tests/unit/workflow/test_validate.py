"""Validation against the recorded ComfyUI 0.8.0 catalogue, with ComfyUI's own error types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wf_helpers import PROTOCOL, load

from comfyfleet.errors import WorkflowValidationError
from comfyfleet.workflow import find_errors, validate_workflow

Graph = dict[str, Any]


def _save(images: list[Any] | None = None) -> dict[str, Any]:
    return {
        "class_type": "SaveImage",
        "inputs": {"images": images or ["1", 0], "filename_prefix": "x"},
    }


def _empty_image(**inputs: Any) -> dict[str, Any]:
    values = {"width": 64, "height": 64, "batch_size": 1, "color": 0} | inputs
    return {"class_type": "EmptyImage", "inputs": {k: v for k, v in values.items() if v != ...}}


def _only(errors: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_graph_has_no_errors(object_info_models: dict[str, Any]) -> None:
    assert find_errors(load("txt2img_api.json"), object_info_models) == []
    validate_workflow(load("qwen_edit_api.json"), object_info_models)
    validate_workflow(load("wan_i2v_api.json"), object_info_models)


def test_unknown_node(object_info: dict[str, Any]) -> None:
    graph = {"1": {"class_type": "NoSuchNodeClass", "inputs": {}}, "2": _save()}
    assert _only(find_errors(graph, object_info)) == {
        "node_id": "1",
        "class_type": "NoSuchNodeClass",
        "input_name": None,
        "type": "unknown_class_type",
        "message": "node class 'NoSuchNodeClass' does not exist in this ComfyUI "
        "(a custom node that is not installed?)",
        "details": "Node ID '#1'",
    }


def test_missing_model(object_info: dict[str, Any]) -> None:
    graph = load("txt2img_api.json")
    with pytest.raises(WorkflowValidationError) as info:
        validate_workflow(graph, object_info)
    error = _only(info.value.node_errors)
    assert error["node_id"] == "4"
    assert error["class_type"] == "CheckpointLoaderSimple"
    assert error["input_name"] == "ckpt_name"
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in []"
    assert info.value.message == (
        "workflow is invalid: node 4 (CheckpointLoaderSimple) input 'ckpt_name': Value not in "
        "list: ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in []"
    )
    assert info.value.status == 422


def test_missing_model_lists_installed_files(object_info_models: dict[str, Any]) -> None:
    graph = load("txt2img_api.json")
    graph["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    error = _only(find_errors(graph, object_info_models))
    assert error["message"] == (
        "Value not in list: ckpt_name: 'sdxl.safetensors' not in "
        "['v1-5-pruned-emaonly.safetensors']"
    )


def test_missing_required_input(object_info: dict[str, Any]) -> None:
    graph = {"1": _empty_image(height=...), "2": _save()}
    error = _only(find_errors(graph, object_info))
    assert (error["node_id"], error["input_name"], error["type"], error["message"]) == (
        "1",
        "height",
        "required_input_missing",
        "Required input is missing",
    )


def test_out_of_range(object_info: dict[str, Any]) -> None:
    graph = {"1": _empty_image(width=100000, height=0), "2": _save()}
    errors = find_errors(graph, object_info)
    assert [(e["input_name"], e["type"], e["message"]) for e in errors] == [
        ("width", "value_bigger_than_max", "Value 100000 bigger than max of 16384"),
        ("height", "value_smaller_than_min", "Value 0 smaller than min of 1"),
    ]


def test_wrong_literal_type(object_info: dict[str, Any]) -> None:
    graph = {"1": _empty_image(width="abc"), "2": _save()}
    error = _only(find_errors(graph, object_info))
    assert error["type"] == "invalid_input_type"
    assert error["input_name"] == "width"
    assert (
        error["message"]
        == "Failed to convert an input value to a INT value: 'abc' is not an integer"
    )


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("width", 64, True),
        ("width", 64.0, True),
        ("width", 64.5, False),
        ("width", True, False),
        ("width", "64", False),
        ("width", None, False),
        ("height", {"__value__": 32}, True),
    ],
)
def test_int_inputs(object_info: dict[str, Any], kind: str, value: Any, ok: bool) -> None:
    graph = {"1": _empty_image(**{kind: value}), "2": _save()}
    assert (find_errors(graph, object_info) == []) is ok


@pytest.mark.parametrize(("value", "ok"), [(1, True), (0.5, True), ("0.5", False), (False, False)])
def test_float_inputs(object_info_models: dict[str, Any], value: Any, ok: bool) -> None:
    graph = load("txt2img_api.json")
    graph["3"]["inputs"]["denoise"] = value
    assert (find_errors(graph, object_info_models) == []) is ok


def test_literal_where_a_link_must_go(object_info_models: dict[str, Any]) -> None:
    graph = load("txt2img_api.json")
    graph["3"]["inputs"]["model"] = "v1-5-pruned-emaonly.safetensors"
    error = _only(find_errors(graph, object_info_models))
    assert (error["node_id"], error["input_name"], error["type"]) == (
        "3",
        "model",
        "invalid_input_type",
    )
    assert error["message"].startswith("a MODEL input must be linked to another node's output")


def test_link_type_mismatch(object_info: dict[str, Any]) -> None:
    graph = {
        "1": _empty_image(),
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "red"}},
        "3": _save(["2", 0]),
    }
    error = _only(find_errors(graph, object_info))
    assert (error["node_id"], error["input_name"], error["type"]) == (
        "3",
        "images",
        "return_type_mismatch",
    )
    assert error["details"] == "images, received_type(MASK) mismatch input_type(IMAGE)"
    assert "(from node 2 ImageToMask output 0)" in error["message"]


def test_link_to_a_node_that_does_not_exist(object_info: dict[str, Any]) -> None:
    error = _only(find_errors({"2": _save(["99", 0])}, object_info))
    assert (error["node_id"], error["class_type"], error["input_name"], error["type"]) == (
        "2",
        "SaveImage",
        "images",
        "linked_node_missing",
    )
    assert error["message"] == "linked to node '99', which is not in the workflow"


def test_link_to_a_slot_the_source_does_not_have(object_info: dict[str, Any]) -> None:
    error = _only(find_errors({"1": _empty_image(), "2": _save(["1", 3])}, object_info))
    assert error["type"] == "bad_linked_input"
    assert error["message"] == "linked to output 3 of node 1 (EmptyImage), which has 1 output(s)"


def test_malformed_link(object_info: dict[str, Any]) -> None:
    error = _only(find_errors({"1": _empty_image(), "2": _save(["1", 0, 1])}, object_info))
    assert error["type"] == "bad_linked_input"


def test_value_not_in_list_for_v3_combo(object_info: dict[str, Any]) -> None:
    # ImageToMask.channel is declared ["COMBO", {"options": [...]}] in 0.8.0.
    assert object_info["ImageToMask"]["input"]["required"]["channel"][0] == "COMBO"
    graph = {
        "1": _empty_image(),
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "purple"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": _save(["3", 0]),
    }
    error = _only(find_errors(graph, object_info))
    assert error["details"] == "channel: 'purple' not in ['red', 'green', 'blue', 'alpha']"


def test_combo_input_given_as_a_link(object_info_models: dict[str, Any]) -> None:
    graph = load("txt2img_api.json")
    graph["10"] = {"class_type": "PrimitiveString", "inputs": {"value": "euler"}}
    graph["3"]["inputs"]["sampler_name"] = ["10", 0]
    error = _only(find_errors(graph, object_info_models))
    assert error["type"] == "return_type_mismatch"  # STRING into a combo, as ComfyUI says
    graph["3"]["inputs"]["sampler_name"] = {"__value__": "euler"}
    assert find_errors(graph, object_info_models) == []


def test_optional_inputs_may_be_absent_and_star_takes_anything(
    object_info: dict[str, Any],
) -> None:
    graph = {
        "1": _empty_image(),
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": 12}},
    }
    assert find_errors(graph, object_info) == []


def test_uploaded_image_names_are_not_list_checked(object_info: dict[str, Any]) -> None:
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "job-1_0.png"}}, "2": _save()}
    assert find_errors(graph, object_info) == []


def test_nodes_no_output_depends_on_are_not_checked(object_info: dict[str, Any]) -> None:
    graph = {"1": _empty_image(), "2": _save(), "3": _empty_image(width="abc")}
    assert find_errors(graph, object_info) == []


def test_no_output_node(object_info: dict[str, Any]) -> None:
    for graph in ({"1": _empty_image()}, {}):
        with pytest.raises(WorkflowValidationError) as info:
            validate_workflow(graph, object_info)
        error = _only(info.value.node_errors)
        assert error["type"] == "prompt_no_outputs"
        assert info.value.message == (
            "workflow is invalid: Prompt has no outputs: the workflow needs an output node "
            "such as SaveImage, PreviewImage or SaveVideo"
        )


def test_every_error_at_once(object_info: dict[str, Any]) -> None:
    graph = {
        "1": _empty_image(width="abc", height=99999),
        "2": _save(),
        "3": {"class_type": "Nope", "inputs": {}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {}},
    }
    with pytest.raises(WorkflowValidationError) as info:
        validate_workflow(graph, object_info)
    found = [(e["node_id"], e["input_name"], e["type"]) for e in info.value.node_errors]
    assert found == [
        ("3", None, "unknown_class_type"),
        ("1", "width", "invalid_input_type"),
        ("1", "height", "value_bigger_than_max"),
        ("5", "images", "required_input_missing"),
    ]


# ComfyUI's per-input error types for the recorded cases, and ours where they differ.
_SAME_AS = {"exception_during_validation": "linked_node_missing"}


def _recorded_cases() -> list[tuple[str, dict[str, Any], list[tuple[str, str | None, str]]]]:
    cases = []
    for name in (
        "c_validation_errors.json",
        "d_unknown_class_type.json",
        "e_missing_checkpoint.json",
    ):
        for case in json.loads((PROTOCOL / name).read_text())["cases"]:
            exchange = case["exchanges"][0]
            prompt, body = exchange["request"]["json"]["prompt"], exchange["response"]["json"]
            if any("class_type" not in node for node in prompt.values()):
                continue  # a parse error here (test_graph)
            expected = []
            top = body.get("error") or {}
            if top.get("type") == "invalid_prompt":
                node_id = top["details"].removeprefix("Node ID '#").rstrip("'")
                expected.append((node_id, None, "unknown_class_type"))
            if top.get("type") == "prompt_no_outputs":
                expected.append((None, None, "prompt_no_outputs"))
            for node_id, entry in body.get("node_errors", {}).items():
                for error in entry["errors"]:
                    if error["type"] == "custom_validation_failed":
                        continue  # LoadImage checks its file itself: ComfyUI's job
                    kind = _SAME_AS.get(error["type"], error["type"])
                    input_name = error["extra_info"].get("input_name")
                    if kind == "linked_node_missing":
                        input_name = "images"  # ComfyUI's KeyError names no input; we do
                    expected.append((node_id, input_name, kind))
            cases.append((case["label"], prompt, expected))
    return cases


@pytest.mark.parametrize(("label", "prompt", "expected"), _recorded_cases())
def test_recorded_comfyui_rejections(
    object_info: dict[str, Any],
    label: str,
    prompt: dict[str, Any],
    expected: list[tuple[str, str | None, str]],
) -> None:
    found = [(e["node_id"], e["input_name"], e["type"]) for e in find_errors(prompt, object_info)]
    assert sorted(found, key=str) == sorted(expected, key=str), label
