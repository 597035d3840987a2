"""Every artifact a finished prompt produced, read from its history entry.

Not only SaveImage: each output node's UI dict is scanned. Lists of ``{filename, subfolder,
type}`` are files (``images``; ``gifs``/``videos`` of VideoHelperSuite-style nodes; ``audio``;
anything else such as ``latents`` or ``3d``), lists of strings under ``text``/``string`` are text
(PreviewAny). ``animated: [true]`` marks a node's images as animations. Temp previews
(``type: temp``) are skipped unless asked for.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from typing import Any

from comfyfleet.comfy.messages import HistoryEntry
from comfyfleet.jobs import Artifact, ArtifactKind

_VIDEO_KEYS = {"gifs", "videos", "video"}
_AUDIO_KEYS = {"audio"}
_TEXT_KEYS = {"text", "string", "strings", "texts"}
_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".flac": "audio/flac",
    ".opus": "audio/opus",
    ".latent": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}


def collect(entry: HistoryEntry, *, include_temp: bool = False) -> list[Artifact]:
    """The artifacts of ``entry``, output nodes in numeric id order, each node's keys in order."""
    artifacts: list[Artifact] = []
    for node_id in sorted(entry.outputs, key=_node_order):
        ui = entry.outputs[node_id]
        if not isinstance(ui, dict):
            continue
        animated = any(v is True for v in ui.get("animated") or ())
        for key, items in ui.items():
            if not isinstance(items, list):
                continue
            for i, item in enumerate(items):
                artifact = _artifact(str(node_id), key, i, item, animated)
                if artifact is not None and (include_temp or artifact.type != "temp"):
                    artifacts.append(artifact)
    return artifacts


def media_type(filename: str) -> str:
    ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return _EXTRA_TYPES.get(ext) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def text_chunks(artifact: Artifact) -> AsyncIterator[bytes]:
    """A text artifact's bytes, for sinks (which only take streams)."""
    yield (artifact.text or "").encode()


def _artifact(node_id: str, key: str, i: int, item: Any, animated: bool) -> Artifact | None:
    if isinstance(item, str) and key in _TEXT_KEYS:
        return Artifact(
            node_id=node_id,
            filename=f"{node_id}_{key}_{i}.txt",
            type="text",
            kind="text",
            media_type="text/plain; charset=utf-8",
            text=item,
        )
    if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
        return None
    filename = item["filename"]
    declared = item.get("format")
    mime = declared if isinstance(declared, str) and "/" in declared else media_type(filename)
    return Artifact(
        node_id=node_id,
        filename=filename,
        subfolder=str(item.get("subfolder") or ""),
        type=str(item.get("type") or "output"),
        kind=_kind(key, mime, animated),
        media_type=mime,
    )


def _kind(key: str, mime: str, animated: bool) -> ArtifactKind:
    major = mime.split("/")[0]
    if key in _VIDEO_KEYS or major == "video" or (animated and major == "image"):
        return "video"
    if key in _AUDIO_KEYS or major == "audio":
        return "audio"
    if major == "image":
        return "image"
    return "file"


def _node_order(node_id: str) -> tuple[int, float, str]:
    try:
        return (0, float(node_id), node_id)
    except ValueError:
        return (1, 0.0, node_id)
