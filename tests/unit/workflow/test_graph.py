"""Parsing: what is accepted as an API-format graph, and the exact error for what is not."""

from __future__ import annotations

import json

import pytest
from wf_helpers import DATA, load

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow import parse_workflow


def test_api_graph_round_trips_as_a_copy() -> None:
    data = load("txt2img_api.json")
    graph = parse_workflow(data)
    assert graph == data
    graph["3"]["inputs"]["seed"] = 1
    assert data["3"]["inputs"]["seed"] == 156680208700286


def test_json_text_and_bytes_are_parsed() -> None:
    text = (DATA / "txt2img_api.json").read_text()
    assert parse_workflow(text) == parse_workflow(text.encode()) == load("txt2img_api.json")


def test_integer_node_ids_in_links_are_normalised() -> None:
    graph = parse_workflow({"1": {"class_type": "VAEDecode", "inputs": {"samples": [5, 0]}}})
    assert graph["1"]["inputs"]["samples"] == ["5", 0]


def test_missing_inputs_means_no_inputs() -> None:
    assert parse_workflow({"1": {"class_type": "EmptyImage"}})["1"]["inputs"] == {}


def test_malformed_json() -> None:
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow('{"1": {"class_type": "EmptyImage",}}')
    assert info.value.message == (
        "workflow is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 35"
    )
    assert info.value.details == {"line": 1, "column": 35}
    assert info.value.status == 400


def test_not_an_object() -> None:
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow("[1, 2]")
    assert info.value.message.startswith("a workflow must be a JSON object mapping node ids")
    assert info.value.message.endswith("got an array")


def test_node_that_is_not_an_object() -> None:
    with pytest.raises(WorkflowFormatError, match=r"^node '1' must be an object .* got a string$"):
        parse_workflow({"1": "EmptyImage"})


def test_node_without_class_type() -> None:
    # ComfyUI: "Cannot execute because a node is missing the class_type property." (d_...json)
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow({"1": {"inputs": {"width": 64}}})
    assert info.value.message == "node '1' has no 'class_type'"
    assert info.value.details == {"node_id": "1"}


def test_request_body_instead_of_graph_gets_a_hint() -> None:
    body = {"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}
    with pytest.raises(WorkflowFormatError, match="pass the graph inside 'prompt' instead"):
        parse_workflow(body)


def test_class_type_must_be_a_string() -> None:
    with pytest.raises(WorkflowFormatError, match="'class_type' must be a non-empty string"):
        parse_workflow({"1": {"class_type": 5, "inputs": {}}})


def test_inputs_must_be_an_object() -> None:
    with pytest.raises(WorkflowFormatError, match=r"node '1' \(EmptyImage\): 'inputs' must be"):
        parse_workflow({"1": {"class_type": "EmptyImage", "inputs": [64, 64]}})


def test_ui_format_without_catalogue_explains_how_to_export() -> None:
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow(json.dumps(load("ui_txt2img.json")))
    message = info.value.message
    assert message.startswith("this is a UI-format workflow")
    assert "Workflow → Export (API)" in message
    assert "'Save (API Format)'" in message
    assert info.value.code == "invalid_workflow_format"
