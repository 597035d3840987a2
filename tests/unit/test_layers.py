"""Imports point down the layer list of the architecture: a lower room never reaches up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "comfyfleet"

TOP = {"gateway", "fleet", "worker", "client", "cli"}
# room -> rooms of ours it must not import (at module level or inside functions)
FORBIDDEN: dict[str, set[str]] = {
    "workflow": TOP | {"comfy", "queue", "execute", "outputs", "models", "runtime"},
    "comfy": TOP | {"queue"},
    "queue": TOP | {"comfy", "execute", "workflow"},
    "outputs": TOP,  # webhooks deliver from the queue's outbox
    "models": TOP | {"queue"},
    "runtime": TOP - {"cli"} | {"queue"},
    "fleet": {"gateway", "cli"},
}


def imported_rooms(path: Path) -> set[str]:
    rooms: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "comfyfleet" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_nothing_above_it(room: str) -> None:
    base = PACKAGE / room
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert files, f"no modules found for {room}"
    reaching_up = {
        str(f.relative_to(PACKAGE)): sorted(imported_rooms(f) & FORBIDDEN[room]) for f in files
    }
    assert not {f: r for f, r in reaching_up.items() if r}
