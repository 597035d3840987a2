"""The model folders ComfyUI knows, as folder name -> directories relative to a models root.

Core names are ComfyUI 0.8.0's ``GET /models`` answer (recorded in
``tests/fixtures/comfyui-protocol/h_endpoints.json``) with the secondary directories ComfyUI's own
``folder_paths.py`` registers (``clip`` and ``unet`` are the legacy names ComfyUI maps to
``text_encoders`` and ``diffusion_models``). ``custom_nodes`` is left out on purpose: it is in
that answer but it holds code, not models, and must not be redirected to a volume.

Custom-node names are the folders popular node packs look up through ``folder_paths``
(Impact Pack, IPAdapter, AnimateDiff, ReActor, Florence2, ...). Listing one that no installed
node uses is harmless: ComfyUI just knows one more name.
"""

from __future__ import annotations

from collections.abc import Iterator

CORE_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "configs": ("configs",),
    "loras": ("loras",),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("diffusion_models", "unet"),
    "clip_vision": ("clip_vision",),
    "style_models": ("style_models",),
    "embeddings": ("embeddings",),
    "diffusers": ("diffusers",),
    "vae_approx": ("vae_approx",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",),
    "upscale_models": ("upscale_models",),
    "latent_upscale_models": ("latent_upscale_models",),
    "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",),
    "classifiers": ("classifiers",),
    "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",),
}

CUSTOM_NODE_FOLDERS: dict[str, tuple[str, ...]] = {
    "ultralytics": ("ultralytics",),
    "ultralytics_bbox": ("ultralytics/bbox",),
    "ultralytics_segm": ("ultralytics/segm",),
    "sams": ("sams",),
    "mmdets": ("mmdets",),
    "mmdets_bbox": ("mmdets/bbox",),
    "mmdets_segm": ("mmdets/segm",),
    "insightface": ("insightface",),
    "facerestore_models": ("facerestore_models",),
    "facedetection": ("facedetection",),
    "reactor": ("reactor",),
    "instantid": ("instantid",),
    "pulid": ("pulid",),
    "ipadapter": ("ipadapter",),
    "animatediff_models": ("animatediff_models",),
    "animatediff_motion_lora": ("animatediff_motion_lora",),
    "LLM": ("LLM",),
    "florence2": ("florence2",),
    "onnx": ("onnx",),
    "grounding-dino": ("grounding-dino",),
}

# ComfyUI resolves these old names to the new ones (folder_paths.map_legacy).
LEGACY_ALIASES: dict[str, str] = {"clip": "text_encoders", "unet": "diffusion_models"}

# Folders that exist in ComfyUI's tree but are never model folders.
NOT_MODEL_FOLDERS: frozenset[str] = frozenset({"custom_nodes"})

ALL_FOLDERS: dict[str, tuple[str, ...]] = {**CORE_FOLDERS, **CUSTOM_NODE_FOLDERS}


def canonical(name: str) -> str:
    """The folder name ComfyUI files a (possibly legacy) name under."""
    return LEGACY_ALIASES.get(name, name)


def primary_dir(name: str) -> str:
    """The relative directory new files for ``name`` go to (the first of its directories)."""
    name = canonical(name)
    dirs = ALL_FOLDERS.get(name)
    return dirs[0] if dirs else name


def known_dirs() -> Iterator[str]:
    """Every relative directory of every known folder, each once, in declaration order."""
    seen: set[str] = set()
    for dirs in ALL_FOLDERS.values():
        for rel in dirs:
            if rel not in seen:
                seen.add(rel)
                yield rel


def top_level_dirs() -> list[str]:
    """First path components of the known directories (what symlink mode links)."""
    out: list[str] = []
    for rel in known_dirs():
        top = rel.split("/", 1)[0]
        if top not in out:
            out.append(top)
    return out
