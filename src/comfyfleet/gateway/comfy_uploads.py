"""``POST /upload/image`` for ComfyUI clients: files kept under ``<data_dir>/comfy-uploads`` and
sent with the prompts that name them.

ComfyUI's own rules: the answer is ``{"name", "subfolder", "type": "input"}``; the same name
with the same bytes is the same file; with other bytes it becomes ``name (1).png`` unless
``overwrite`` is true. A prompt whose image input names an uploaded file (``a.png``,
``sub/a.png`` or ``a.png [input]``) carries that file as one of the task's images, pointed at
that node, so any backend can run it. The folder belongs to this gateway's host: replicas
behind one address need a shared data directory (or the SDK's inline images).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from comfyfleet.errors import InvalidRequest, PayloadTooLarge
from comfyfleet.outputs.artifacts import is_safe_segment, safe_name

IMAGE_INPUTS = ("image",)


class Uploads:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _folder(self, subfolder: str) -> Path:
        parts = [p for p in subfolder.replace("\\", "/").split("/") if p]
        if not all(is_safe_segment(p) for p in parts):
            raise InvalidRequest(f"subfolder {subfolder!r} is not allowed", field="subfolder")
        return self.root.joinpath(*parts)

    def save(
        self, filename: str, data: bytes, subfolder: str = "", overwrite: bool = False
    ) -> dict:
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"image {filename!r} is larger than the {self.max_bytes} bytes allowed",
                field="image",
            )
        folder = self._folder(subfolder)
        folder.mkdir(parents=True, exist_ok=True)
        name = safe_name(filename or "image.png")
        path = folder / name
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        number = 0
        while path.exists() and not overwrite:
            if _digest(path.read_bytes()) == _digest(data):
                break  # the same file again: the same name
            number += 1
            path = folder / f"{stem} ({number}){dot}{ext}"
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return {"name": path.name, "subfolder": subfolder.strip("/"), "type": "input"}

    def find(self, value: str) -> Path | None:
        """The uploaded file an input value names, if any."""
        name = value.removesuffix(" [input]").strip()
        subfolder, _, base = name.rpartition("/")
        if not base or not is_safe_segment(base):
            return None
        try:
            path = self._folder(subfolder) / base
        except InvalidRequest:
            return None
        return path if path.is_file() else None

    def images_for(self, graph: dict[str, Any]) -> list[dict[str, Any]]:
        """One task image per node input that names an uploaded file."""
        images = []
        for node_id, node in graph.items():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            for key in IMAGE_INPUTS:
                value = (inputs or {}).get(key)
                path = self.find(value) if isinstance(value, str) else None
                if path is not None:
                    data = base64.b64encode(path.read_bytes()).decode()
                    images.append({"name": path.name, "image": data, "node_id": str(node_id)})
        return images


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
