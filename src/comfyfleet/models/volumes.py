"""Find the model roots on network volumes.

One volume is mounted at ``/runpod-volume`` in serverless workers and at ``/workspace`` in pods
(seed 001), with or without a ``comfyui``/``ComfyUI`` level, or used by SwarmUI (seed 000). Only
directory existence is checked — never a file walk — so detection stays instant on volumes with
thousands of models. The candidate base directories are a parameter so tests can use fake trees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from comfyfleet.models.folders import ALL_FOLDERS, canonical, top_level_dirs

log = logging.getLogger(__name__)

Layout = Literal["comfyui", "swarmui"]

DEFAULT_BASES: tuple[Path, ...] = (Path("/runpod-volume"), Path("/workspace"))

# Relative to a base: (models dir, layout). Order is precedence: the first root found is primary.
CANDIDATES: tuple[tuple[str, Layout], ...] = (
    ("comfyui/models", "comfyui"),
    ("ComfyUI/models", "comfyui"),
    ("models", "comfyui"),
    ("SwarmUI/Models", "swarmui"),
    ("SwarmUI/dlbackend/ComfyUI/models", "comfyui"),
)

# SwarmUI's own folder names for ComfyUI's folders (both spellings seen in the wild).
SWARM_DIRS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("Stable-Diffusion",),
    "loras": ("Lora", "Loras", "LyCORIS"),
    "vae": ("VAE",),
    "embeddings": ("Embeddings",),
    "controlnet": ("ControlNet", "controlnet"),
    "clip_vision": ("clip_vision",),
    "upscale_models": ("upscale_models",),
    "text_encoders": ("clip", "text_encoders"),
    "diffusion_models": ("diffusion_models", "unet"),
}


@dataclass(frozen=True)
class ModelRoot:
    """A directory holding model folders, and how its folders are named."""

    path: Path
    layout: Layout = "comfyui"
    source: str = "detected"

    def dirs_for(self, name: str) -> tuple[str, ...]:
        """Relative directories that may hold folder ``name``'s files in this root."""
        name = canonical(name)
        if self.layout == "swarmui":
            return SWARM_DIRS.get(name, (name,))
        return ALL_FOLDERS.get(name, (name,))

    def folder_path(self, name: str) -> Path:
        """Where new files for folder ``name`` (or a sub-path such as ``loras/style``) go."""
        head, _, rest = name.partition("/")
        base = self.path / self.dirs_for(head)[0]
        return base / rest if rest else base


@dataclass
class Detection:
    """Roots found, in precedence order, plus configured roots that were missing, that led to
    the models below them (``descended``: given -> used) or that hold no model folder yet."""

    roots: list[ModelRoot] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    descended: dict[Path, Path] = field(default_factory=dict)
    empty: list[Path] = field(default_factory=list)

    @property
    def primary(self) -> ModelRoot | None:
        return self.roots[0] if self.roots else None


def candidate_roots(bases: Iterable[Path] = DEFAULT_BASES) -> list[ModelRoot]:
    """Every place a volume's models may be, whether or not it exists."""
    return [
        ModelRoot(Path(base) / rel, layout, source=f"volume:{base}")
        for base in bases
        for rel, layout in CANDIDATES
    ]


def has_model_folders(path: Path) -> bool:
    """True when ``path`` holds at least one of ComfyUI's (or SwarmUI's) model folders."""
    known = set(top_level_dirs()) | {d for dirs in SWARM_DIRS.values() for d in dirs}
    return any(name in known for name in subdirs(path))


def models_below(path: Path) -> ModelRoot | None:
    """The first usual layout under ``path`` (``comfyui/models``, ``ComfyUI/models``,
    ``models``, ``SwarmUI/Models``, ...) that exists, for a root given one level too high."""
    for rel, layout in CANDIDATES:
        if (path / rel).is_dir():
            return ModelRoot(path / rel, layout, source="configured")
    return None


def _configured(root: ModelRoot, found: Detection, create: bool) -> ModelRoot:
    """A configured root as given, or the models below it when it holds no model folder
    itself (``--root /workspace`` where the models sit at ``/workspace/ComfyUI/models``)."""
    if has_model_folders(root.path):
        return root
    below = models_below(root.path)
    if below is not None:
        found.descended[root.path] = below.path
        log.info("configured model root %s: using the models at %s", root.path, below.path)
        return below
    if not create:
        found.empty.append(root.path)
        log.info("configured model root %s holds none of ComfyUI's model folders", root.path)
    return root


def detect_roots(
    configured: Sequence[Path] = (),
    *,
    bases: Iterable[Path] = DEFAULT_BASES,
    create: bool = False,
) -> Detection:
    """Configured roots first (created when ``create``), then every existing volume candidate.

    A configured root that holds no model folder but has a usual layout below it is replaced
    by that (`Detection.descended`); one with neither is kept and listed in `Detection.empty`.
    Roots that are the same directory (a symlinked mount, a case-insensitive file system) are
    kept once, by device and inode.
    """
    found = Detection()
    seen: set[tuple[int, int]] = set()
    wanted = [ModelRoot(Path(p), "comfyui", source="configured") for p in configured]
    for root in [*wanted, *candidate_roots(bases)]:
        if root.source == "configured" and create:
            root.path.mkdir(parents=True, exist_ok=True)
        try:
            st = os.stat(root.path)
        except OSError:
            if root.source == "configured":
                found.missing.append(root.path)
                log.warning("configured model root %s does not exist", root.path)
            continue
        if not os.path.isdir(root.path):
            continue
        if root.source == "configured":
            root = _configured(root, found, create)
            st = os.stat(root.path)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        found.roots.append(root)
    return found


def subdirs(path: Path) -> list[str]:
    """Names of the non-hidden directories directly inside ``path`` (one scandir, no walk)."""
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)
            )
    except OSError:
        return []
