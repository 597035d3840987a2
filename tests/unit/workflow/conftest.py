"""Fixtures: the real ComfyUI 0.8.0 node catalogue and small workflows under ``data/``."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from wf_helpers import CATALOGUE

# Model files a test "installs" by adding them to the catalogue's option lists.
MODELS: dict[tuple[str, str], list[str]] = {
    ("CheckpointLoaderSimple", "ckpt_name"): ["v1-5-pruned-emaonly.safetensors"],
    ("UNETLoader", "unet_name"): [
        "qwen_image_edit_2509_fp8_e4m3fn.safetensors",
        "wan2.1_i2v_480p_14B_fp8_scaled.safetensors",
    ],
    ("CLIPLoader", "clip_name"): [
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    ],
    ("VAELoader", "vae_name"): ["qwen_image_vae.safetensors", "wan_2.1_vae.safetensors"],
    ("CLIPVisionLoader", "clip_name"): ["clip_vision_h.safetensors"],
}


@pytest.fixture(scope="session")
def _catalogue() -> dict[str, Any]:
    return json.loads(CATALOGUE.read_text(encoding="utf-8"))


@pytest.fixture
def object_info(_catalogue: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI 0.8.0's catalogue as recorded: no model files installed."""
    return _catalogue


@pytest.fixture(scope="session")
def _catalogue_with_models(_catalogue: dict[str, Any]) -> dict[str, Any]:
    info = copy.deepcopy(_catalogue)
    for (class_type, name), files in MODELS.items():
        spec = info[class_type]["input"]["required"][name]
        spec[0] = list(files)
    return info


@pytest.fixture
def object_info_models(_catalogue_with_models: dict[str, Any]) -> dict[str, Any]:
    """The same catalogue on a server where the fixture workflows' models are installed."""
    return _catalogue_with_models
