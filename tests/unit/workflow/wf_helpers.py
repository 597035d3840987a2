"""Paths and loaders shared by the workflow tests (a plain module: tests import it directly)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATA = HERE / "data"
REPO = HERE.parents[2]
PROTOCOL = REPO / "tests" / "fixtures" / "comfyui-protocol"  # ComfyUI 0.8.0's recordings
# The recorded GET /object_info ships as the test server's package data (not copied twice).
CATALOGUE = REPO / "src" / "comfyfleet" / "testing" / "data" / "object_info.json"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def node(nid: int | str, kind: str, values: Any = None, inputs=(), outputs=(), **extra) -> dict:
    """A node as the frontend saves it (UI format): ``values`` are its ``widgets_values``."""
    return {
        "id": nid,
        "type": kind,
        "mode": 0,
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "widgets_values": values if values is not None else [],
        **extra,
    }
