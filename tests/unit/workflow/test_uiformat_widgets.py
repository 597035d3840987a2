"""Widgets the frontend builds beyond a class's inputs, read as its "Export (API)" does:
V3 dynamic combos (``<combo>.<input>`` widgets of the chosen option), V3 autogrow sockets
(``<group>.<prefix><n>``), the control-after-generate rule and frontend-only widgets."""

from __future__ import annotations

from typing import Any

import pytest
from wf_helpers import node

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow import find_errors, ui_to_api
from comfyfleet.workflow.widgets import CONTROL, widget_slots


def api(graph: dict) -> dict:
    return {k: v["inputs"] for k, v in graph.items()}


def resize(values: Any, **extra: Any) -> dict:
    """LoadImage -> ResizeImageMaskNode (its resize_type is a dynamic combo) -> PreviewImage."""
    return {
        "nodes": [
            node(1, "LoadImage", ["cat.png", "image"], outputs=[{"name": "IMAGE", "links": [1]}]),
            node(
                2,
                "ResizeImageMaskNode",
                values,
                inputs=[{"name": "input", "type": "IMAGE,MASK", "link": 1}],
                outputs=[{"name": "IMAGE", "links": [2]}],
                **extra,
            ),
            node(3, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 2}]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    }


def test_dynamic_combo_widgets_follow_the_chosen_option(object_info) -> None:
    dims = api(ui_to_api(resize(["scale dimensions", 1024, 768, "center", "lanczos"]), object_info))
    assert dims["2"] == {
        "resize_type": "scale dimensions",
        "resize_type.width": 1024,
        "resize_type.height": 768,
        "resize_type.crop": "center",
        "scale_method": "lanczos",
        "input": ["1", 0],
    }
    longer = api(ui_to_api(resize(["scale longer dimension", 2048, "area"]), object_info))
    assert longer["2"] == {
        "resize_type": "scale longer dimension",
        "resize_type.longer_size": 2048,
        "scale_method": "area",
        "input": ["1", 0],
    }


def test_dynamic_combo_by_name_keeps_only_the_chosen_options_widgets(object_info) -> None:
    named = {
        "resize_type": "scale by multiplier",
        "resize_type.multiplier": 2.5,
        "resize_type.width": 640,  # left over from another option: not an input now
        "scale_method": "bicubic",
    }
    graph = ui_to_api(resize(list(named.values()), widgets_values_named=named), object_info)
    assert api(graph)["2"] == {
        "resize_type": "scale by multiplier",
        "resize_type.multiplier": 2.5,
        "scale_method": "bicubic",
        "input": ["1", 0],
    }


def test_dynamic_combo_that_does_not_fit_is_refused_naming_node_and_input(object_info) -> None:
    with pytest.raises(
        WorkflowFormatError,
        match=r"node 2 \(ResizeImageMaskNode\) input "
        r"'resize_type' is 'scale by magic', which is none of",
    ) as info:
        ui_to_api(resize(["scale by magic", 2.0, "area"]), object_info)
    assert info.value.details == {
        "node_id": "2",
        "class_type": "ResizeImageMaskNode",
        "input_name": "resize_type",
    }
    # "scale dimensions" has three widgets of its own: one value short shifts everything.
    with pytest.raises(WorkflowFormatError, match=r"node 2 \(ResizeImageMaskNode\) has 4 widget"):
        ui_to_api(resize(["scale dimensions", 1024, 768, "lanczos"]), object_info)


def test_autogrow_sockets_arrive_as_links(object_info) -> None:
    sources = [
        node(i, "LoadImage", [f"{i}.png", "image"], outputs=[{"name": "IMAGE", "links": [i]}])
        for i in (1, 2)
    ]
    batch = node(
        3,
        "BatchImagesNode",
        [],
        inputs=[
            {"label": "image0", "name": "images.image0", "type": "IMAGE", "link": 1},
            {"label": "image1", "name": "images.image1", "type": "IMAGE", "link": 2},
            {"label": "image2", "name": "images.image2", "type": "IMAGE", "link": None},
        ],
        outputs=[{"name": "IMAGE", "links": [3]}],
    )
    preview = node(4, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 3}])
    data = {
        "nodes": [*sources, batch, preview],
        "links": [[1, 1, 0, 3, 0, "IMAGE"], [2, 2, 0, 3, 1, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"]],
    }
    graph = ui_to_api(data, object_info)
    assert api(graph)["3"] == {"images.image0": ["1", 0], "images.image1": ["2", 0]}
    assert find_errors(graph, object_info) == []


def test_control_after_generate_follows_the_frontends_rule(object_info) -> None:
    """An INT named seed gets a control unless its spec says ``control_after_generate: false``
    (Moonvalley's seed), and any INT asking for one gets it whatever its name."""
    moonvalley, _ = widget_slots(object_info["MoonvalleyVideo2VideoNode"])
    assert moonvalley[:3] == ["prompt", "negative_prompt", "seed"] and CONTROL not in moonvalley
    gemini, _ = widget_slots(object_info["GeminiImageNode"])
    assert gemini[gemini.index("seed") + 1] == CONTROL
    values = ["a fox", "blurry", 7, 20, "Pose Transfer", 50]
    graph = ui_to_api({"nodes": [node(1, "MoonvalleyVideo2VideoNode", values)]}, object_info)
    assert api(graph)["1"] == {
        "prompt": "a fox",
        "negative_prompt": "blurry",
        "seed": 7,
        "steps": 20,
        "control_type": "Pose Transfer",
        "motion_intensity": 50,
    }


def test_promoted_proxy_of_a_frontend_widget_sets_no_input(object_info) -> None:
    """A subgraph may promote a seed's control widget (``proxyWidgets`` entry
    ``[id, "control_after_generate"]``): its value is the frontend's, not an input."""
    sub = "33333333-3333-4333-8333-333333333333"
    inner = node(4, "RandomNoise", [5, "randomize"], outputs=[{"name": "NOISE", "links": []}])
    data = {
        "nodes": [
            node(
                8,
                sub,
                [99, "fixed"],
                properties={"proxyWidgets": [["4", "noise_seed"], ["4", "control_after_generate"]]},
            )
        ],
        "links": [],
        "definitions": {
            "subgraphs": [
                {"id": sub, "name": "noise", "inputs": [], "outputs": [], "nodes": [inner]}
            ]
        },
    }
    assert api(ui_to_api(data, object_info)) == {"8:4": {"noise_seed": 99}}


def test_custom_combo_keeps_its_choice_and_drops_the_frontends_option_list(object_info) -> None:
    """CustomCombo's frontend keeps a hidden index and the user's options after the combo."""
    values = ["9:16", 1, "16:9", "9:16", ""]
    graph = ui_to_api({"nodes": [node(1, "CustomCombo", values)]}, object_info)
    assert api(graph) == {"1": {"choice": "9:16"}}


def test_inputs_the_browser_makes_are_refused_naming_node_and_input(object_info) -> None:
    load3d = node(
        13, "Load3D", ["toy.glb", "upload3dmodel", "uploadExtraResources", "clear", "", 1024, 1024]
    )
    with pytest.raises(WorkflowFormatError) as info:
        ui_to_api({"nodes": [load3d]}, object_info)
    assert info.value.message.startswith(
        "cannot convert this UI-format workflow faithfully (node 13 (Load3D) input 'image' is "
        "a render of the 3D viewport, which the frontend makes in the browser while it exports)"
    )
    assert info.value.details == {"node_id": "13", "class_type": "Load3D", "input_name": "image"}
    webcam = node(2, "WebcamCapture", ["", 512, 512, True])
    with pytest.raises(WorkflowFormatError, match=r"node 2 \(WebcamCapture\) input 'image' is a "):
        ui_to_api({"nodes": [webcam]}, object_info)
    # Bypassed, such a node is left out like any other: nothing to refuse.
    webcam["mode"] = 4
    assert ui_to_api({"nodes": [webcam]}, object_info) == {}


def test_positional_values_win_and_names_settle_a_list_that_does_not_fit(object_info) -> None:
    """The frontend loads ``widgets_values`` by position (it never reads
    ``widgets_values_named``): when both fit, the positional value is what it exports."""
    stale = node(
        1,
        "LoadImage",
        ["shown.png", "image"],
        widgets_values_named={"image": "stale.png", "upload": "image"},
    )
    assert api(ui_to_api({"nodes": [stale]}, object_info)) == {"1": {"image": "shown.png"}}
    # A list from another version of the class (CreateVideo gained widgets): read by name,
    # the widgets this ComfyUI lacks are left out.
    newer = node(
        2,
        "CreateVideo",
        [30, 8, "sRGB"],
        widgets_values_named={"fps": 30, "bit_depth": 8, "color_space": "sRGB"},
    )
    assert api(ui_to_api({"nodes": [newer]}, object_info)) == {"2": {"fps": 30}}
    # By name, a required widget without a value is refused, not left for ComfyUI to miss.
    lacking = node(
        3, "CreateVideo", [8, "sRGB"], widgets_values_named={"bit_depth": 8, "color_space": "sRGB"}
    )
    with pytest.raises(
        WorkflowFormatError,
        match=r"node 3 \(CreateVideo\) has no saved value "
        r"for input 'fps'; the workflow was saved with a different version",
    ):
        ui_to_api({"nodes": [lacking]}, object_info)
    # ... unless a link gives it.
    lacking["inputs"] = [{"name": "fps", "type": "FLOAT", "widget": {"name": "fps"}, "link": 7}]
    source = node(4, "PrimitiveFloat", [24.0], outputs=[{"name": "FLOAT", "links": [7]}])
    data = {"nodes": [source, lacking], "links": [[7, 4, 0, 3, 0, "FLOAT"]]}
    assert api(ui_to_api(data, object_info))["3"] == {"fps": ["4", 0]}


def test_a_short_list_takes_defaults_when_every_value_fits(object_info) -> None:
    """ImageScaleToTotalPixels gained ``resolution_steps`` after this template was saved: the
    frontend keeps that widget's default. A list short of a seed's control is refused: its
    values would land one widget off."""
    older = node(1, "ImageScaleToTotalPixels", ["area", 1.5])
    assert api(ui_to_api({"nodes": [older]}, object_info))["1"] == {
        "upscale_method": "area",
        "megapixels": 1.5,
        "resolution_steps": 1,
    }
    no_control = node(2, "GeminiImageNode", ["a fox", "gemini-2.5-flash-image", 222, "auto"])
    with pytest.raises(WorkflowFormatError, match=r"node 2 \(GeminiImageNode\) has 4 widget"):
        ui_to_api({"nodes": [no_control]}, object_info)
    wrong_type = node(3, "ImageScaleToTotalPixels", ["area", "1.5"])  # a STRING in a FLOAT
    with pytest.raises(WorkflowFormatError, match=r"node 3 \(ImageScaleToTotalPixels\) has 2"):
        ui_to_api({"nodes": [wrong_type]}, object_info)


def test_a_remote_list_with_a_refresh_button_gets_its_slot_too(object_info) -> None:
    """LoadImageOutput's combo has an upload flag and a remote list with a refresh button."""
    for values in (["cat.png [output]", "image", None], ["cat.png [output]"]):
        graph = ui_to_api({"nodes": [node(1, "LoadImageOutput", values)]}, object_info)
        assert api(graph) == {"1": {"image": "cat.png [output]"}}
    with pytest.raises(WorkflowFormatError, match=r"node 1 \(LoadImageOutput\) has 4 widget"):
        ui_to_api({"nodes": [node(1, "LoadImageOutput", ["a", "image", None, 1])]}, object_info)


def test_a_bypassed_node_passes_a_type_that_fits_not_only_an_equal_one(object_info) -> None:
    """Bypassed ResizeImageMaskNode takes "IMAGE,MASK": the frontend's type check (LiteGraph's
    isValidConnection) lets the IMAGE through to the IMAGE input downstream."""
    data = resize(["scale by multiplier", 2.0, "area"], mode=4)
    data["nodes"][1]["outputs"][0]["type"] = "IMAGE"
    graph = ui_to_api(data, object_info)
    assert api(graph) == {"1": {"image": "cat.png"}, "3": {"images": ["1", 0]}}


def test_a_primitive_nodes_value_is_what_its_target_widget_exports(object_info) -> None:
    """The frontend copies a PrimitiveNode's value into the widget it feeds before exporting,
    so that value wins over the one saved on the target; the link itself is not exported."""
    primitive = node(5, "PrimitiveNode", [0.75, "fixed"], outputs=[{"name": "FLOAT", "links": [9]}])
    scale = node(
        6,
        "ImageScaleBy",
        ["nearest-exact", 1.0],
        inputs=[{"name": "scale_by", "type": "FLOAT", "widget": {"name": "scale_by"}, "link": 9}],
    )
    data = {"nodes": [primitive, scale], "links": [[9, 5, 0, 6, 0, "FLOAT"]]}
    assert api(ui_to_api(data, object_info)) == {
        "6": {"upscale_method": "nearest-exact", "scale_by": 0.75}
    }
