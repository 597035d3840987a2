"""Model-aware placement: which model files a task needs, and which a backend has.

Both sides name a file the same way, ``"<folder>/<file name>"`` (``"checkpoints/a.safetensors"``),
so a claimer can tell whether it meets a task's needs by set inclusion:

- a task needs the files its inline workflow's loader nodes name (``ckpt_name``, ``unet_name``,
  ``lora_name``, ``vae_name``, ``clip_name``..., literal values only) and the files of its
  ``JobSpec.models``;
- a backend has the files its cached ``/object_info`` lists as the options of those same
  inputs (ComfyUI lists its model folders there).

The checkpoint (or diffusion model) a task loads first is its *warm key*: the backend that ran
that key last still has it in VRAM, so it prefers such tasks (see docs/fleet.md "Model-aware
placement"). Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from comfyfleet.jobs import JobSpec
from comfyfleet.models.folders import canonical

# Loader inputs whose value is a model file, by input name -> ComfyUI model folder.
MODEL_INPUTS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "lora_name": "loras",
    "vae_name": "vae",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "text_encoder": "text_encoders",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "upscale_model_name": "upscale_models",
    "photomaker_model_name": "photomaker",
    "audio_encoder_name": "audio_encoders",
}
# Classes where an input name above (or a generic one) means another folder.
CLASS_INPUTS: dict[str, dict[str, str]] = {
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "LatentUpscaleModelLoader": {"model_name": "latent_upscale_models"},
    "ModelPatchLoader": {"name": "model_patches"},
}
# Inputs whose file is what sits in VRAM across tasks: the warm key.
WARM_INPUTS: frozenset[str] = frozenset({"ckpt_name", "unet_name"})


@dataclass(frozen=True, slots=True)
class Needs:
    """A task's model files (sorted, each once) and its warm key (None: loads no checkpoint)."""

    files: tuple[str, ...] = ()
    checkpoint: str | None = None


def folder_of(class_type: str, input_name: str) -> str | None:
    """The model folder a node's input names a file of, or None for other inputs."""
    special = CLASS_INPUTS.get(class_type)
    if special is not None and input_name in special:
        return special[input_name]
    return MODEL_INPUTS.get(input_name)


def key(folder: str, filename: str) -> str:
    return f"{canonical(folder)}/{filename}"


def needs_of(spec: JobSpec) -> Needs:
    """What ``spec`` loads: its API-format workflow's model files and ``spec.models``. A
    template (rendered on the backend) or a UI-format graph contributes only ``spec.models``."""
    files: set[str] = set()
    checkpoint: str | None = None
    graph = spec.workflow if isinstance(spec.workflow, dict) else {}
    if not isinstance(graph.get("nodes"), list):  # UI format: not resolved here
        for node_id in sorted(graph, key=_node_order):
            node = graph[node_id]
            if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
                continue
            class_type = str(node.get("class_type", ""))
            for name, value in node["inputs"].items():
                folder = folder_of(class_type, name)
                if folder is None or not isinstance(value, str) or not value:
                    continue
                files.add(key(folder, value))
                if checkpoint is None and name in WARM_INPUTS:
                    checkpoint = key(folder, value)
    for model in spec.models:
        files.add(key(model.folder, model.filename or _url_name(model.url)))
    return Needs(tuple(sorted(files)), checkpoint)


def files_of(object_info: Mapping[str, Any]) -> frozenset[str]:
    """The model files a backend has: the options of its loader inputs in ``object_info``."""
    have: set[str] = set()
    for class_type, info in object_info.items():
        inputs = info.get("input") if isinstance(info, dict) else None
        if not isinstance(inputs, dict):
            continue
        for section in ("required", "optional"):
            specs = inputs.get(section)
            if not isinstance(specs, dict):
                continue
            for name, spec in specs.items():
                folder = folder_of(class_type, name)
                if folder is not None:
                    have.update(key(folder, option) for option in _options(spec))
    return frozenset(have)


class Catalogues:
    """`files_of` for object_info dicts seen before, computed once per dict (backends keep
    their cached object_info object until they fetch a new one)."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._seen: dict[int, tuple[Mapping[str, Any], frozenset[str]]] = {}

    def files(self, object_info: Mapping[str, Any]) -> frozenset[str]:
        hit = self._seen.get(id(object_info))
        if hit is not None and hit[0] is object_info:
            return hit[1]
        files = files_of(object_info)
        if len(self._seen) >= self._size:
            del self._seen[next(iter(self._seen))]
        self._seen[id(object_info)] = (object_info, files)  # kept: its id stays its own
        return files


CATALOGUES = Catalogues()


def met_by_any(files: Collection[str], haves: Iterable[Collection[str]]) -> bool:
    """Whether one of the backends (their file sets) has every file."""
    return any(all(f in have for f in files) for have in haves)


def placement(spec: JobSpec, catalogues: Sequence[Mapping[str, Any]]) -> Needs:
    """What to store with a new task: its warm key always; its files only when a backend known
    now has them all. A task that no known backend meets is left to anyone (it downloads its
    ``models`` or fails with the precise missing-model error) instead of waiting for nobody."""
    needs = needs_of(spec)
    if not needs.files:
        return needs
    if met_by_any(needs.files, (CATALOGUES.files(c) for c in catalogues)):
        return needs
    return Needs((), needs.checkpoint)


def _options(spec: Any) -> list[str]:
    """A combo's options: ``[[...], {...}]`` or ComfyUI's ``["COMBO", {"options": [...]}]``."""
    if not isinstance(spec, list | tuple) or not spec:
        return []
    head = spec[0]
    if isinstance(head, list):
        return [o for o in head if isinstance(o, str)]
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return [o for o in options if isinstance(o, str)] if isinstance(options, list) else []
    return []


def _url_name(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
