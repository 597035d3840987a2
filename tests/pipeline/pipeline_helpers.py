"""Workflows and images shared by the pipeline tests."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path
from typing import Any

from PIL import Image


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def b64png(**kw: Any) -> str:
    return base64.b64encode(png(**kw)).decode()


def w1(color: int | None = None, size: int = 64) -> dict[str, Any]:
    """EmptyImage → SaveImage (a fresh colour unless given, so ComfyUI's cache never hits)."""
    color = random.randrange(2**24) if color is None else color
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "w1"}},
    }


def w2() -> dict[str, Any]:
    """LoadImage → ImageInvert → SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "w2"}},
    }


def slow(steps: int = 5, seconds: float = 0.05) -> dict[str, Any]:
    """EmptyImage → FleetTestSlow (progress per step) → SaveImage."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": random.randrange(2**24)},
        },
        "2": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": seconds, "seed": 0},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "s"}},
    }


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
