"""Smart injection: prompts by wiring, images by numeric node order, seeds, sizes, prefixes."""

from __future__ import annotations

import random
from typing import Any

import pytest
from wf_helpers import load

from comfyfleet.errors import InvalidRequest
from comfyfleet.workflow import (
    classify_encoders,
    image_loaders,
    inject_images,
    inject_prompts,
    set_filename_prefixes,
    set_seeds,
    set_size,
    size_nodes,
)

OI = dict[str, Any]


# --- prompts -----------------------------------------------------------------------------


def test_txt2img_positive_and_negative_follow_the_sampler(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    assert classify_encoders(graph, object_info) == {"positive": ["6"], "negative": ["7"]}
    done = inject_prompts(graph, object_info, "a red fox", "lowres")
    assert done == {"positive": ["6"], "negative": ["7"]}
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["7"]["inputs"]["text"] == "lowres"
    assert graph["6"]["inputs"]["clip"] == ["4", 1]


def test_wiring_decides_not_node_order(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    graph["3"]["inputs"]["positive"], graph["3"]["inputs"]["negative"] = ["7", 0], ["6", 0]
    inject_prompts(graph, object_info, "a red fox", None)
    assert graph["7"]["inputs"]["text"] == "a red fox"
    assert graph["6"]["inputs"]["text"].startswith("beautiful scenery")


def test_qwen_edit_graph(object_info: OI) -> None:
    graph = load("qwen_edit_api.json")
    # The negative encoder (110) has the lower id; the sampler's wiring tells them apart.
    assert classify_encoders(graph, object_info) == {"positive": ["111"], "negative": ["110"]}
    inject_prompts(graph, object_info, "make it night", "daylight")
    assert graph["111"]["inputs"]["prompt"] == "make it night"
    assert graph["110"]["inputs"]["prompt"] == "daylight"


def test_through_nodes_with_positive_and_negative_outputs(object_info: OI) -> None:
    # KSampler.positive <- WanImageToVideo output 0 ("positive") <- encoder 7, negative <- 6.
    graph = load("wan_i2v_api.json")
    assert classify_encoders(graph, object_info) == {"positive": ["7"], "negative": ["6"]}


def test_through_conditioning_nodes_and_guiders(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    graph["10"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "style", "clip": ["4", 1]}}
    graph["11"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["10", 0]},
    }
    graph["12"] = {
        "class_type": "CFGGuider",
        "inputs": {"model": ["4", 0], "positive": ["11", 0], "negative": ["7", 0], "cfg": 5.0},
    }
    del graph["3"]
    assert classify_encoders(graph, object_info) == {"positive": ["6", "10"], "negative": ["7"]}


def test_zeroed_out_negative_stays_positive(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    graph["12"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}
    graph["3"]["inputs"]["negative"] = ["12", 0]
    del graph["7"]
    assert classify_encoders(graph, object_info) == {"positive": ["6"], "negative": []}
    with pytest.raises(InvalidRequest) as info:
        inject_prompts(graph, object_info, "a fox", "blurry")
    assert info.value.message.startswith(
        "a negative prompt was given but the workflow has no text-encode node wired to a "
        "sampler's negative input"
    )
    assert info.value.details == {"field": "negative"}


def test_multi_field_encoders(object_info: OI) -> None:
    graph = {
        "1": {
            "class_type": "CLIPTextEncodeSDXL",
            "inputs": {"text_g": "", "text_l": "", "width": 1024, "height": 1024},
        },
        "2": {"class_type": "BasicGuider", "inputs": {"conditioning": ["1", 0]}},
    }
    inject_prompts(graph, object_info, "a fox", None)
    assert graph["1"]["inputs"]["text_g"] == graph["1"]["inputs"]["text_l"] == "a fox"


def test_a_lone_encoder_not_wired_to_a_sampler_is_positive(object_info: OI) -> None:
    graph = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["9", 1]}}}
    assert inject_prompts(graph, object_info, "a fox", None) == {"positive": ["1"]}
    assert graph["1"]["inputs"]["text"] == "a fox"


def test_prompt_without_any_encoder(object_info: OI) -> None:
    graph = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    with pytest.raises(InvalidRequest, match="a positive prompt was given but the workflow"):
        inject_prompts(graph, object_info, "a fox", None)
    assert inject_prompts(graph, object_info, None, None) == {}


# --- images ------------------------------------------------------------------------------


def test_images_go_to_loaders_in_numeric_id_order(object_info: OI) -> None:
    graph = load("qwen_edit_api.json")
    assert image_loaders(graph, object_info) == ["78", "106"]  # "106" < "78" as text
    placed = inject_images(graph, object_info, ["first.png", "second.png"])
    assert placed == {"78": "first.png", "106": "second.png"}
    assert graph["78"]["inputs"]["image"] == "first.png"
    assert graph["106"]["inputs"]["image"] == "second.png"


def test_two_before_ten(object_info: OI) -> None:
    graph = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "9": {"class_type": "LoadImageMask", "inputs": {"image": "x.png", "channel": "alpha"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "5": {"class_type": "LoadImageOutput", "inputs": {"image": "x.png"}},
    }
    placed = inject_images(graph, object_info, ["a.png", "b.png", "c.png"])
    assert list(placed.items()) == [("2", "a.png"), ("9", "b.png"), ("10", "c.png")]
    assert graph["5"]["inputs"]["image"] == "x.png"  # loads from the output folder: not ours


def test_explicit_node_ids_and_the_rest_in_order(object_info: OI) -> None:
    graph = load("qwen_edit_api.json")
    placed = inject_images(graph, object_info, ["a.png", "b.png"], ["106", None])
    assert placed == {"78": "b.png", "106": "a.png"}


def test_fewer_images_than_loaders_leaves_the_rest(object_info: OI) -> None:
    graph = load("qwen_edit_api.json")
    assert inject_images(graph, object_info, ["a.png"]) == {"78": "a.png"}
    assert graph["106"]["inputs"]["image"] == "example.png"


def test_more_images_than_loaders(object_info: OI) -> None:
    graph = load("qwen_edit_api.json")
    with pytest.raises(InvalidRequest) as info:
        inject_images(graph, object_info, ["a.png", "b.png", "c.png"])
    assert info.value.message == (
        "3 images were given but the workflow has only 2 image loader node(s) (78, 106) to put "
        "them in"
    )


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["404"], "images[0].node_id: the workflow has no node '404'"),
        (
            ["3"],
            "images[0].node_id: node '3' is a KSampler, not an image loader (LoadImage "
            "nodes: 78, 106)",
        ),
        (["78", "78"], "images[1].node_id: node '78' is already given another image"),
    ],
)
def test_bad_explicit_node_ids(object_info: OI, targets: list[str], message: str) -> None:
    graph = load("qwen_edit_api.json")
    with pytest.raises(InvalidRequest) as info:
        inject_images(graph, object_info, ["a.png", "b.png"], targets)
    assert info.value.message == message


# --- seeds -------------------------------------------------------------------------------


def _samplers() -> dict[str, Any]:
    graph = load("txt2img_api.json")
    graph["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    graph["21"] = {"class_type": "OpenAIDalle2", "inputs": {"seed": 5, "prompt": "x"}}
    graph["22"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": ["30", 0]}}
    return graph


def test_random_seeds_one_per_node_within_each_max(object_info: OI) -> None:
    graph = _samplers()
    seeds = set_seeds(graph, object_info, "random", random.Random(1))
    assert set(seeds) == {"3", "20", "21"}  # the linked seed of node 22 is left alone
    assert graph["22"]["inputs"]["noise_seed"] == ["30", 0]
    assert seeds["3"]["seed"] != seeds["20"]["noise_seed"]
    assert 0 <= seeds["21"]["seed"] <= 2147483647  # OpenAIDalle2's own max
    assert all(0 <= v <= 2**50 for s in seeds.values() for v in s.values())
    assert graph["3"]["inputs"]["seed"] == seeds["3"]["seed"]
    again = set_seeds(_samplers(), object_info, "random", random.Random(1))
    assert again == seeds  # the rng decides


def test_random_seeds_respect_a_small_max(object_info: OI) -> None:
    rng = random.Random(7)
    for _ in range(200):
        graph = {"1": {"class_type": "OpenAIDalle2", "inputs": {"seed": 0}}}
        assert set_seeds(graph, object_info, "random", rng)["1"]["seed"] <= 2147483647


def test_fixed_seed_and_no_seed(object_info: OI) -> None:
    graph = _samplers()
    assert set_seeds(graph, object_info, 1234) == {
        "3": {"seed": 1234},
        "20": {"noise_seed": 1234},
        "21": {"seed": 1234},
    }
    graph = load("txt2img_api.json")
    assert set_seeds(graph, object_info, None) == {"3": {"seed": 156680208700286}}


# --- sizes -------------------------------------------------------------------------------


def test_size_nodes_are_the_latent_and_video_creators(object_info: OI) -> None:
    graph = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {}},
        "2": {"class_type": "EmptySD3LatentImage", "inputs": {}},
        "3": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {}},
        "4": {"class_type": "WanImageToVideo", "inputs": {}},
        "5": {"class_type": "EmptyImage", "inputs": {}},
        "6": {"class_type": "LatentUpscale", "inputs": {}},
        "7": {"class_type": "ImageScale", "inputs": {}},
        "8": {"class_type": "CLIPTextEncodeSDXL", "inputs": {}},
        "9": {"class_type": "ModelSamplingFlux", "inputs": {}},
    }
    assert size_nodes(graph, object_info) == ["1", "2", "3", "4", "5", "9"]


def test_width_height_length_on_a_video_graph(object_info: OI) -> None:
    graph = load("wan_i2v_api.json")
    changed = set_size(graph, object_info, width=640, height=640, length=33)
    assert changed == {"50": {"width": 640, "height": 640, "length": 33}}
    assert graph["50"]["inputs"]["batch_size"] == 1


def test_size_overrides_a_link(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    graph["5"]["inputs"]["width"] = ["10", 0]
    assert set_size(graph, object_info, width=768) == {"5": {"width": 768}}
    assert graph["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 1}


def test_size_without_a_size_node(object_info: OI) -> None:
    graph = load("qwen_edit_api.json")
    assert set_size(graph, object_info) == {}
    with pytest.raises(InvalidRequest, match=r"^width was given but the workflow has no node"):
        set_size(graph, object_info, width=512)
    graph = load("txt2img_api.json")
    with pytest.raises(InvalidRequest, match=r"^length was given"):
        set_size(graph, object_info, length=33)


# --- filename prefixes -------------------------------------------------------------------


def test_every_save_node_writes_into_the_job_folder(object_info: OI) -> None:
    graph = load("wan_i2v_api.json")
    graph["60"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}
    graph["61"] = {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": ["70", 0]}}
    graph["62"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "../../etc/x"}}
    graph["63"] = {"class_type": "VHS_VideoCombine", "inputs": {"filename_prefix": "AnimDiff"}}
    graph["64"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    prefixes = set_filename_prefixes(graph, object_info, "job42")
    assert prefixes == {
        "58": "job42/video/ComfyUI",
        "60": "job42/ComfyUI",  # absent: the class default
        "61": "job42/ComfyUI",  # linked: the class default
        "62": "job42/etc/x",  # no way out of the job folder
        "63": "job42/AnimDiff",  # a custom save node this ComfyUI does not know
    }
    assert graph["58"]["inputs"]["filename_prefix"] == "job42/video/ComfyUI"
    assert "filename_prefix" not in graph["64"]["inputs"]


def test_prefixing_twice_changes_nothing(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    first = set_filename_prefixes(graph, object_info, "job42")
    assert set_filename_prefixes(graph, object_info, "job42") == first == {"9": "job42/ComfyUI"}


def test_job_ids_become_safe_folder_names(object_info: OI) -> None:
    graph = load("txt2img_api.json")
    assert set_filename_prefixes(graph, object_info, "../a b/c") == {"9": "_a_b_c/ComfyUI"}
    with pytest.raises(InvalidRequest, match="cannot name an output folder"):
        set_filename_prefixes(load("txt2img_api.json"), object_info, "..")
