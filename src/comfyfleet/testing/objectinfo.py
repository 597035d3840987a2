"""The node catalogue the test server serves and validates against.

It is ComfyUI 0.8.0's recorded ``GET /object_info`` (``data/object_info.json``, 568 classes) with
two changes made at request time, the way ComfyUI computes them:

* file lists are read from the server's own folders on every call: ``LoadImage``'s images from
  ``input/``, checkpoint/LoRA/VAE/... names from ``models/<folder>/``. ComfyUI re-lists these
  whenever it validates a prompt, so a test makes a "model" exist by creating an (empty) file.
* the test-only classes of :mod:`comfyfleet.testing.nodes` (``FleetTest*``) are added. They are not
  part of ComfyUI.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"

PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# ComfyUI's folder_paths.folder_names_and_paths, in its order (this is GET /models):
# name -> (sub-paths relative to the models dir, accepted extensions; empty = any file).
MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("checkpoints",), PT_EXTENSIONS),
    "configs": (("configs",), frozenset({".yaml"})),
    "loras": (("loras",), PT_EXTENSIONS),
    "vae": (("vae",), PT_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), PT_EXTENSIONS),
    "diffusion_models": (("unet", "diffusion_models"), PT_EXTENSIONS),
    "clip_vision": (("clip_vision",), PT_EXTENSIONS),
    "style_models": (("style_models",), PT_EXTENSIONS),
    "embeddings": (("embeddings",), PT_EXTENSIONS),
    "diffusers": (("diffusers",), frozenset({"folder"})),
    "vae_approx": (("vae_approx",), PT_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), PT_EXTENSIONS),
    "gligen": (("gligen",), PT_EXTENSIONS),
    "upscale_models": (("upscale_models",), PT_EXTENSIONS),
    "latent_upscale_models": (("latent_upscale_models",), PT_EXTENSIONS),
    "custom_nodes": (("../custom_nodes",), frozenset()),
    "hypernetworks": (("hypernetworks",), PT_EXTENSIONS),
    "photomaker": (("photomaker",), PT_EXTENSIONS),
    "classifiers": (("classifiers",), frozenset({""})),
    "model_patches": (("model_patches",), PT_EXTENSIONS),
    "audio_encoders": (("audio_encoders",), PT_EXTENSIONS),
}
LEGACY_FOLDER_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}

# (class, input) -> model folder whose file list is the combo's options.
_MODEL_COMBOS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"config_name": "configs", "ckpt_name": "checkpoints"},
    "unCLIPCheckpointLoader": {"ckpt_name": "checkpoints"},
    "ImageOnlyCheckpointLoader": {"ckpt_name": "checkpoints"},
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {f"clip_name{i}": "text_encoders" for i in (1, 2, 3)},
    "QuadrupleCLIPLoader": {f"clip_name{i}": "text_encoders" for i in (1, 2, 3, 4)},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "StyleModelLoader": {"style_model_name": "style_models"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "GLIGENLoader": {"gligen_name": "gligen"},
    "HypernetworkLoader": {"hypernetwork_name": "hypernetworks"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "LatentUpscaleModelLoader": {"model_name": "latent_upscale_models"},
    "PhotoMakerLoader": {"photomaker_model_name": "photomaker"},
    "ModelPatchLoader": {"name": "model_patches"},
    "AudioEncoderLoader": {"audio_encoder_name": "audio_encoders"},
    "LTXVAudioVAELoader": {"ckpt_name": "checkpoints"},
    "LTXAVTextEncoderLoader": {"text_encoder": "text_encoders", "ckpt_name": "checkpoints"},
    "CreateHookLora": {"lora_name": "loras"},
    "CreateHookLoraModelOnly": {"lora_name": "loras"},
    "CreateHookModelAsLora": {"ckpt_name": "checkpoints"},
    "CreateHookModelAsLoraModelOnly": {"ckpt_name": "checkpoints"},
}

# mimetypes does not know every extension ComfyUI accepts (folder_paths seeds these two).
_EXTENSION_CONTENT_TYPES = {"webp": "image", "fbx": "model"}


@cache
def recorded_object_info() -> dict[str, Any]:
    """The recorded ``GET /object_info`` body (parsed once; treat as read-only)."""
    with open(DATA_DIR / "object_info.json", encoding="utf-8") as f:
        return json.load(f)


@cache
def recorded_system_stats() -> dict[str, Any]:
    with open(DATA_DIR / "system_stats.json", encoding="utf-8") as f:
        return json.load(f)


def content_type_of(filename: str) -> str | None:
    ext = filename.split(".")[-1]
    if ext in _EXTENSION_CONTENT_TYPES:
        return _EXTENSION_CONTENT_TYPES[ext]
    mime, _ = mimetypes.guess_type(filename, strict=False)
    return mime.split("/")[0] if mime else None


def filter_content_types(files: Iterable[str], kinds: Iterable[str]) -> list[str]:
    wanted = set(kinds)
    return [f for f in files if content_type_of(f) in wanted]


class Folders:
    """The server's directories, laid out like a ComfyUI install (``input``, ``output``,
    ``temp``, ``models/<folder>``, ``custom_nodes``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.input = self.root / "input"
        self.output = self.root / "output"
        self.temp = self.root / "temp"
        self.models = self.root / "models"
        for d in (self.input, self.output, self.temp, self.models):
            d.mkdir(parents=True, exist_ok=True)

    def by_type(self, type_name: str | None) -> Path | None:
        """ComfyUI's get_directory_by_type: only these three are reachable over HTTP."""
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(type_name or "")

    def annotated(self, name: str, default: Path | None = None) -> Path:
        """Resolve ``"name.png [output]"``-style annotated names (default: input dir)."""
        for tag, base in (
            ("[output]", self.output),
            ("[input]", self.input),
            ("[temp]", self.temp),
        ):
            if name.endswith(tag):
                return base / name[: -len(tag) - 1]
        return (default or self.input) / name

    # -- listings ComfyUI recomputes on every INPUT_TYPES() call ------------------------------

    def input_files(self, kinds: Iterable[str] | None = None, only_files: bool = True) -> list[str]:
        try:
            names = os.listdir(self.input)
        except FileNotFoundError:
            return []
        if only_files:
            names = [n for n in names if (self.input / n).is_file()]
        if kinds is not None:
            names = filter_content_types(names, kinds)
        return sorted(names)

    def model_files(self, folder: str) -> list[str]:
        folder = LEGACY_FOLDER_NAMES.get(folder, folder)
        paths, exts = MODEL_FOLDERS[folder]
        found: set[str] = set()
        for sub in paths:
            base = (self.models / sub).resolve()
            if not base.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
                dirnames[:] = [d for d in dirnames if d != ".git"]
                for fn in filenames:
                    rel = os.path.relpath(os.path.join(dirpath, fn), base)
                    if not exts or os.path.splitext(rel)[-1].lower() in exts:
                        found.add(rel)
        return sorted(found)

    def model_path(self, folder: str, filename: str) -> Path | None:
        folder = LEGACY_FOLDER_NAMES.get(folder, folder)
        if folder not in MODEL_FOLDERS:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for sub in MODEL_FOLDERS[folder][0]:
            p = self.models / sub / filename
            if p.is_file():
                return p
        return None


def _set_options(spec: list[Any], options: list[str]) -> list[Any]:
    """Replace a combo's option list, in the legacy ([opts], {...}) or V3 ("COMBO", {options})
    form."""
    spec = list(spec)
    if spec and spec[0] == "COMBO":
        extra = dict(spec[1]) if len(spec) > 1 else {}
        extra["options"] = options
        spec[1] = extra
    else:
        spec[0] = options
    return spec


class NodeCatalog:
    """Answers "what are the inputs/outputs of class X right now" for routes and validation."""

    def __init__(self, folders: Folders, extra_classes: dict[str, dict[str, Any]] | None = None):
        self.folders = folders
        self._base = recorded_object_info()
        self._extra = dict(extra_classes or {})

    def __contains__(self, class_type: object) -> bool:
        # An unhashable class_type raises TypeError here, as ComfyUI's dict lookup does.
        return class_type in self._base or class_type in self._extra

    def class_names(self) -> list[str]:
        return [*self._base.keys(), *(k for k in self._extra if k not in self._base)]

    def _dynamic_options(self, class_type: str) -> dict[str, list[str]]:
        f = self.folders
        if class_type in ("LoadImage", "LoadImageMask"):
            return {"image": f.input_files(["image"])}
        if class_type == "LoadAudio":
            return {"audio": f.input_files(["audio", "video"], only_files=False)}
        if class_type == "LoadVideo":
            return {"file": f.input_files(["video"])}
        if class_type == "LoadLatent":
            return {"latent": [n for n in f.input_files() if n.endswith(".latent")]}
        if class_type == "VAELoader":
            return {"vae_name": [*f.model_files("vae"), "pixel_space"]}
        if class_type == "TrainLoraNode":
            return {"existing_lora": [*f.model_files("loras"), "[None]"]}
        inputs = _MODEL_COMBOS.get(class_type)
        if inputs:
            return {name: f.model_files(folder) for name, folder in inputs.items()}
        return {}

    def info(self, class_type: str) -> dict[str, Any] | None:
        """The object_info entry of one class, with file lists read now (a fresh copy)."""
        base = self._extra.get(class_type) or self._base.get(class_type)
        if base is None:
            return None
        dynamic = self._dynamic_options(class_type)
        if not dynamic:
            return base  # read-only use; routes serialize it, validation only reads it
        info = copy.deepcopy(base)
        for section in ("required", "optional"):
            inputs = info["input"].get(section, {})
            for name, options in dynamic.items():
                if name in inputs:
                    inputs[name] = _set_options(inputs[name], options)
        return info

    def static_info(self, class_type: str) -> dict[str, Any] | None:
        """The entry without re-reading file lists (read-only)."""
        return self._extra.get(class_type) or self._base.get(class_type)

    def all_info(self) -> dict[str, Any]:
        return {name: self.info(name) for name in self.class_names()}

    def is_output_node(self, class_type: str) -> bool:
        info = self._extra.get(class_type) or self._base.get(class_type) or {}
        return info.get("output_node") is True

    def return_types(self, class_type: str) -> tuple[Any, ...]:
        info = self._extra.get(class_type) or self._base.get(class_type) or {}
        return tuple(info.get("output", ()))
