"""Subgraphs flattened the way the frontend's "Export (API)" does it: inner ids
``<instance>:<inner>``, links through the input (-10) and output (-20) nodes re-attached,
promoted widget values, nesting, and refusals that name the node."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from wf_helpers import node

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow import ui_to_api
from comfyfleet.workflow.nodeinfo import input_specs
from comfyfleet.workflow.validate import find_errors

INVERT_ID = "11111111-1111-4111-8111-111111111111"
OUTER_ID = "22222222-2222-4222-8222-222222222222"


def link(lid, o, os_, t, ts, kind) -> dict:
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    return dict(zip(keys, (lid, o, os_, t, ts, kind), strict=True))


# Inside: image -> ImageScaleBy(scale_by promoted) -> ImageInvert -> output.
INVERT = {
    "id": INVERT_ID,
    "name": "scale and invert",
    "inputs": [
        {"name": "image", "type": "IMAGE", "linkIds": [1]},
        {"name": "scale_by", "type": "FLOAT", "linkIds": [2]},
    ],
    "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [4]}],
    "nodes": [
        node(
            1,
            "ImageScaleBy",
            inputs=[
                {"name": "image", "type": "IMAGE", "link": 1},
                {"name": "scale_by", "type": "FLOAT", "widget": {"name": "scale_by"}, "link": 2},
            ],
            values=["nearest-exact", 1.0],
        ),
        node(2, "ImageInvert", inputs=[{"name": "image", "type": "IMAGE", "link": 3}]),
    ],
    "links": [
        link(1, -10, 0, 1, 0, "IMAGE"),
        link(2, -10, 1, 1, 1, "FLOAT"),
        link(3, 1, 0, 2, 0, "IMAGE"),
        link(4, 2, 0, -20, 0, "IMAGE"),
    ],
}


def workflow(instance_values: Any = (2.0,), **instance_extra: Any) -> dict:
    return {
        "nodes": [
            node(3, "EmptyImage", values=[8, 8, 1, 0]),
            node(
                5,
                INVERT_ID,
                inputs=[{"name": "image", "type": "IMAGE", "link": 10}],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [11]}],
                values=list(instance_values),
                **instance_extra,
            ),
            node(
                9,
                "SaveImage",
                inputs=[{"name": "images", "type": "IMAGE", "link": 11}],
                values=["out"],
            ),
        ],
        "links": [[10, 3, 0, 5, 0, "IMAGE"], [11, 5, 0, 9, 0, "IMAGE"]],
        "definitions": {"subgraphs": [copy.deepcopy(INVERT)]},
    }


EXPECTED = {
    "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                 "color": 0}},
    "5:1": {"class_type": "ImageScaleBy", "inputs": {"upscale_method": "nearest-exact",
                                                     "scale_by": 2.0, "image": ["3", 0]}},
    "5:2": {"class_type": "ImageInvert", "inputs": {"image": ["5:1", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "out", "images": ["5:2", 0]}},
}  # fmt: skip


def api(graph: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in graph.items()}


def test_instance_expands_with_frontend_ids_and_promoted_value(object_info) -> None:
    graph = ui_to_api(workflow(), object_info)
    assert api(graph) == EXPECTED
    assert find_errors(graph, object_info) == []


def test_promoted_value_by_name_and_through_proxy_widgets(object_info) -> None:
    named = ui_to_api(workflow((), widgets_values_named={"scale_by": 3.0}), object_info)
    assert named["5:1"]["inputs"]["scale_by"] == 3.0
    proxied = workflow((0.5,), properties={"proxyWidgets": [["1", "scale_by"]]})
    assert ui_to_api(proxied, object_info)["5:1"]["inputs"]["scale_by"] == 0.5
    inner_only = ui_to_api(workflow(()), object_info)  # no promoted value: the inner one
    assert inner_only["5:1"]["inputs"]["scale_by"] == 1.0


def test_nested_subgraphs(object_info) -> None:
    outer = {
        "id": OUTER_ID,
        "name": "outer",
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [1]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [2]}],
        "nodes": [
            node(
                7,
                INVERT_ID,
                inputs=[{"name": "image", "type": "IMAGE", "link": 1}],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
                values=[4.0],
            ),
        ],
        "links": [link(1, -10, 0, 7, 0, "IMAGE"), link(2, 7, 0, -20, 0, "IMAGE")],
    }
    data = workflow()
    data["nodes"][1]["type"] = OUTER_ID
    data["nodes"][1]["widgets_values"] = []
    data["definitions"]["subgraphs"].append(outer)
    graph = api(ui_to_api(data, object_info))
    assert set(graph) == {"3", "5:7:1", "5:7:2", "9"}
    assert graph["5:7:1"]["inputs"]["image"] == ["3", 0]
    assert graph["5:7:1"]["inputs"]["scale_by"] == 4.0
    assert graph["9"]["inputs"]["images"] == ["5:7:2", 0]


def test_bypassed_instance_passes_its_input_through(object_info) -> None:
    data = workflow()
    data["nodes"][1]["mode"] = 4
    graph = api(ui_to_api(data, object_info))
    assert set(graph) == {"3", "9"} and graph["9"]["inputs"]["images"] == ["3", 0]


def test_refusals_name_the_node(object_info) -> None:
    data = workflow()
    data["definitions"]["subgraphs"][0]["links"].pop()  # nothing feeds the output any more
    with pytest.raises(
        WorkflowFormatError, match="node 9 is linked to output 0 of subgraph node 5"
    ):
        ui_to_api(data, object_info)
    with pytest.raises(WorkflowFormatError, match=r"subgraph node 5 .* 3 widget values for 1"):
        ui_to_api(workflow((1.0, 2.0, 3.0)), object_info)
    wrong_slot = workflow()
    wrong_slot["links"][1] = [11, 3, 4, 9, 0, "IMAGE"]  # EmptyImage has one output
    with pytest.raises(WorkflowFormatError, match="linked to output 4 of node 3 \\(EmptyImage\\)"):
        ui_to_api(wrong_slot, object_info)


def test_input_is_not_changed(object_info) -> None:
    data = workflow()
    before = json.dumps(data, sort_keys=True)
    ui_to_api(data, object_info)
    assert json.dumps(data, sort_keys=True) == before


# --- the official templates (PyPI comfyui-workflow-templates-json, not committed) -----------
def template_files() -> list[Path]:
    import comfyui_workflow_templates_json as package

    root = Path(package.__file__).parent / "templates"
    return sorted(root.glob("*.json"))


def undeclared_and_dynamic_problems(graph: dict, object_info: dict) -> list[str]:
    """What `find_errors` leaves unchecked: inputs the class does not declare (a value landed on
    a name the class lacks), V3 dynamic combos set to a key they lack or missing a required
    input of the chosen option. (How many sockets of an autogrow group are linked is the
    template's business: one template links one image where ComfyUI 0.8.0 wants two.)"""
    problems = []
    for node_id, entry in graph.items():
        info = object_info.get(entry["class_type"])
        if info is None:
            continue
        specs = input_specs(info)
        inputs = entry["inputs"]
        for name in inputs:
            if name.split(".")[0] not in specs:
                problems.append(f"{node_id}: undeclared input {name!r}")
        for spec in specs.values():
            if spec.type == "COMFY_DYNAMICCOMBO_V3" and spec.name in inputs:
                options = {o["key"]: o for o in spec.options["options"]}
                chosen = options.get(inputs[spec.name])
                if chosen is None:
                    problems.append(f"{node_id}: {spec.name} = {inputs[spec.name]!r}")
                    continue
                for sub in chosen["inputs"].get("required") or {}:
                    if f"{spec.name}.{sub}" not in inputs:
                        problems.append(f"{node_id}: {spec.name}.{sub} missing")
    return problems


def test_every_official_template_converts_or_is_refused_with_a_reason(object_info) -> None:
    """Converted graphs are wired as the catalogue says (no link to an output that does not
    exist, no required input lost, nothing set that the class does not declare); the rest are
    refused naming the node and why."""
    from comfyfleet.workflow.uiformat import is_ui_workflow

    converted = refused = 0
    for path in template_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        if not is_ui_workflow(data):
            continue
        try:
            graph = ui_to_api(data, object_info)
        except WorkflowFormatError as exc:
            refused += 1
            assert "cannot convert" in exc.message and "Export (API)" in exc.message, path.name
            node_id = exc.details.get("node_id")
            assert node_id and f"node {node_id}" in exc.message, (path.name, exc.message)
            continue
        converted += 1
        problems = [
            e
            for e in find_errors(graph, object_info)
            if e["type"] != "value_not_in_list"  # model files are not installed here
            # Our validator does not resolve V3 MatchType templates (ComfyUI does).
            and "COMFY_MATCHTYPE_V3" not in e["message"]
        ]
        assert problems == [], (path.name, problems[:3])
        assert undeclared_and_dynamic_problems(graph, object_info) == [], path.name
    assert converted > 100 and refused > 0, (converted, refused)


def test_named_widget_values_skip_frontend_only_widgets(object_info) -> None:
    """A node saved with ``widgets_values_named`` is read by name: widgets the frontend adds of
    its own (here an extra preview value) neither shift the values nor break the count."""
    positional = {"nodes": [node(1, "LoadImage", values=["a.png", "image", "preview-state"])]}
    with pytest.raises(WorkflowFormatError, match="3 widget values"):
        ui_to_api(positional, object_info)
    named = copy.deepcopy(positional)
    named["nodes"][0]["widgets_values_named"] = {
        "image": "a.png",
        "upload": "image",
        "preview": "preview-state",
    }
    assert api(ui_to_api(named, object_info)) == {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}
    }


def test_frontend_only_trailing_widgets_are_dropped(object_info) -> None:
    """SaveGLB's 3D preview and LoadAudio's player add values after the real widgets; a class
    without such widgets still refuses an extra value."""
    data = {
        "nodes": [
            node(1, "SaveGLB", values=["mesh/out", ""]),
            node(2, "LoadAudio", values=["take.mp3", None, ""]),
            node(3, "PreviewAny", values=[None, None, None]),
        ]
    }
    graph = api(ui_to_api(data, object_info))
    assert graph["1"]["inputs"] == {"filename_prefix": "mesh/out"}
    assert graph["2"]["inputs"] == {"audio": "take.mp3"}
    assert graph["3"]["inputs"] == {}
    with pytest.raises(WorkflowFormatError, match=r"node 4 \(SaveImage\) has 2 widget values"):
        ui_to_api({"nodes": [node(4, "SaveImage", values=["out", ""])]}, object_info)


# --- hand-made graphs whose API form follows the frontend's ExecutableNodeDTO rules -----------
# (an inner node's id is the instance path joined by ':'; a link from the input node (-10)
# resolves through the instance's input: its outer link, else the instance's widget for it,
# else nothing, which leaves the inner widget's own value; an instance output resolves to what
# feeds the output node (-20), recursively.)
PASS_ID = "44444444-4444-4444-8444-444444444444"


def test_link_through_a_subgraph_input_straight_to_its_output(object_info) -> None:
    """Output 0 is fed by input 0 directly (-10 -> -20) and input 0 also feeds an inner node:
    downstream of the instance the link resolves to what feeds the instance."""
    passing = {
        "id": PASS_ID,
        "name": "pass and invert",
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [1, 2]}],
        "outputs": [
            {"name": "same", "type": "IMAGE", "linkIds": [1]},
            {"name": "inverted", "type": "IMAGE", "linkIds": [3]},
        ],
        "nodes": [node(4, "ImageInvert", inputs=[{"name": "image", "type": "IMAGE", "link": 2}])],
        "links": [
            link(1, -10, 0, -20, 0, "IMAGE"),
            link(2, -10, 0, 4, 0, "IMAGE"),
            link(3, 4, 0, -20, 1, "IMAGE"),
        ],
    }
    data = {
        "nodes": [
            node(3, "EmptyImage", values=[8, 8, 1, 0]),
            node(
                6,
                PASS_ID,
                inputs=[{"name": "image", "type": "IMAGE", "link": 10}],
                outputs=[
                    {"name": "same", "type": "IMAGE", "links": [11]},
                    {"name": "inverted", "type": "IMAGE", "links": [12]},
                ],
            ),
            node(9, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 11}],
                 values=["same"]),
            node(10, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 12}],
                 values=["inverted"]),
        ],
        "links": [
            [10, 3, 0, 6, 0, "IMAGE"],
            [11, 6, 0, 9, 0, "IMAGE"],
            [12, 6, 1, 10, 0, "IMAGE"],
        ],
        "definitions": {"subgraphs": [passing]},
    }  # fmt: skip
    graph = ui_to_api(data, object_info)
    assert api(graph) == {
        "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                     "color": 0}},
        "6:4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "same",
                                                    "images": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"filename_prefix": "inverted",
                                                     "images": ["6:4", 0]}},
    }  # fmt: skip
    assert find_errors(graph, object_info) == []


def nested_workflow(outer_values: list[Any], inner_values: list[Any]) -> dict:
    """Root instance 5 (OUTER) holds instance 7 (INVERT); OUTER promotes ``scale`` into 7's
    ``scale_by`` input, which INVERT promotes into ImageScaleBy's widget."""
    outer = {
        "id": OUTER_ID,
        "name": "outer",
        "inputs": [
            {"name": "image", "type": "IMAGE", "linkIds": [1]},
            {"name": "scale", "type": "FLOAT", "linkIds": [3]},
        ],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [2]}],
        "nodes": [
            node(
                7,
                INVERT_ID,
                inputs=[
                    {"name": "image", "type": "IMAGE", "link": 1},
                    {"name": "scale_by", "type": "FLOAT", "widget": {"name": "scale_by"},
                     "link": 3},
                ],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
                values=inner_values,
            ),
        ],
        "links": [
            link(1, -10, 0, 7, 0, "IMAGE"),
            link(3, -10, 1, 7, 1, "FLOAT"),
            link(2, 7, 0, -20, 0, "IMAGE"),
        ],
    }  # fmt: skip
    data = workflow()
    data["nodes"][1]["type"] = OUTER_ID
    data["nodes"][1]["widgets_values"] = outer_values
    data["definitions"]["subgraphs"].append(outer)
    return data


def test_nested_promoted_widget_takes_the_outermost_value(object_info) -> None:
    graph = ui_to_api(nested_workflow([0.25], [4.0]), object_info)
    assert api(graph) == {
        "3": EXPECTED["3"],
        "5:7:1": {"class_type": "ImageScaleBy", "inputs": {"upscale_method": "nearest-exact",
                                                           "scale_by": 0.25, "image": ["3", 0]}},
        "5:7:2": {"class_type": "ImageInvert", "inputs": {"image": ["5:7:1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "out",
                                                    "images": ["5:7:2", 0]}},
    }  # fmt: skip
    assert find_errors(graph, object_info) == []
    # The outer instance shows no widget for it: the inner widget's own value, not instance
    # 7's (its input is linked, so its widget is not consulted).
    unpromoted = api(ui_to_api(nested_workflow([], [4.0]), object_info))
    assert unpromoted["5:7:1"]["inputs"]["scale_by"] == 1.0


def test_a_definition_may_carry_the_definitions_it_uses(object_info) -> None:
    """The schema lets a subgraph definition hold its own ``definitions.subgraphs``."""
    data = nested_workflow([0.25], [4.0])
    invert, outer = data["definitions"]["subgraphs"]
    outer["definitions"] = {"subgraphs": [invert]}
    data["definitions"]["subgraphs"] = [outer]
    assert api(ui_to_api(data, object_info)) == api(
        ui_to_api(nested_workflow([0.25], [4.0]), object_info)
    )


def test_only_inputs_that_feed_a_widget_give_the_instance_a_widget(object_info) -> None:
    """A STRING input wired to a socket (WanMoveTracksFromCoords' forceInput ``track_coords``)
    has no widget on the instance: the one saved value belongs to ``scale``."""
    sub = "55555555-5555-4555-8555-555555555555"
    definition = {
        "id": sub,
        "name": "tracks and scale",
        "inputs": [
            {"name": "coords", "type": "STRING", "linkIds": [1]},
            {"name": "scale", "type": "FLOAT", "linkIds": [2]},
        ],
        "outputs": [],
        "nodes": [
            node(1, "WanMoveTracksFromCoords",
                 inputs=[{"name": "track_coords", "type": "STRING", "link": 1}]),
            node(2, "ImageScaleBy", values=["nearest-exact", 1.0],
                 inputs=[{"name": "scale_by", "type": "FLOAT", "widget": {"name": "scale_by"},
                          "link": 2}]),
        ],
        "links": [link(1, -10, 0, 1, 0, "STRING"), link(2, -10, 1, 2, 0, "FLOAT")],
    }  # fmt: skip
    data = {"nodes": [node(4, sub, values=[0.5])], "links": [],
            "definitions": {"subgraphs": [definition]}}  # fmt: skip
    graph = api(ui_to_api(data, object_info))
    assert graph["4:2"]["inputs"] == {"upscale_method": "nearest-exact", "scale_by": 0.5}
    assert graph["4:1"]["inputs"] == {}


def test_an_older_instance_keeps_a_slot_for_a_promoted_seeds_control(object_info) -> None:
    """Older frontends saved the instance's values with the inner seed's control after it
    ([seed, "fixed"]); current ones save one value per promoted input. Both read the same."""
    sub = "66666666-6666-4666-8666-666666666666"
    definition = {
        "id": sub,
        "name": "noise",
        "inputs": [{"name": "noise_seed", "type": "INT", "linkIds": [1]}],
        "outputs": [],
        "nodes": [
            node(4, "RandomNoise", values=[5, "randomize"],
                 inputs=[{"name": "noise_seed", "type": "INT",
                          "widget": {"name": "noise_seed"}, "link": 1}]),
        ],
        "links": [link(1, -10, 0, 4, 0, "INT")],
    }  # fmt: skip
    for values in ([77, "fixed"], [77]):
        data = {"nodes": [node(8, sub, values=values)], "links": [],
                "definitions": {"subgraphs": [copy.deepcopy(definition)]}}  # fmt: skip
        assert api(ui_to_api(data, object_info))["8:4"]["inputs"] == {"noise_seed": 77}
