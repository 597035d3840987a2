"""What the SDK tests share: the ten-line script, its template, two input images."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

# Two images, a prompt and a seed: the prompt names the outputs ({{ PROMPT }} as prefix), the
# seed lands in FleetTestSlow (smart injection), which also reports a progress step per step.
TEMPLATE = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "first.png"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "second.png"}},
    "3": {
        "class_type": "FleetTestSlow",
        "inputs": {"image": ["1", 0], "steps": 3, "seconds_per_step": 0.05, "seed": 0},
    },
    "4": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "5": {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": "{{ PROMPT }}-kept"},
    },
    "6": {
        "class_type": "SaveImage",
        "inputs": {"images": ["4", 0], "filename_prefix": "{{ PROMPT }}-inverted"},
    },
}


def write_templates(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pair.json").write_text(json.dumps(TEMPLATE))
    return folder


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def ten_line_script(target: str, image_path: Path, image_bytes: bytes, out: Path, **kw) -> dict:
    """The user's script (the lines between the markers), returning what it printed."""
    printed: dict = {"progress": [], "saved": []}
    # --- the ten lines ---
    from comfyfleet import Client

    with Client(target, **kw) as client:
        job = client.submit(
            template="pair", images=[image_path, image_bytes], prompt="red-fox", seed=1234
        )
        for event in job.progress():
            printed["progress"].append((event.status, event.describe(), event.percent))
        result = job.wait()
        printed["saved"] = result.save(out)
    # --- end ---
    printed["result"] = result
    return printed
