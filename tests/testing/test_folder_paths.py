"""``GET /internal/folder_paths``: ComfyUI 0.8.0's shape (not recorded: its names and order are
the recorded ``GET /models``; each value is that folder's list of absolute paths, with main.py's
output-folder entries appended), served outside ``/api`` like ComfyUI's internal sub-app."""

from __future__ import annotations

import json
import os

from comfyfleet.testing import ComfyTestServer

from .replay import PROTOCOL_DIR


def recorded_models() -> list[str]:
    recording = json.loads((PROTOCOL_DIR / "h_endpoints.json").read_text())
    for exchange in recording["exchanges"]:
        if exchange["request"]["path"] == "/models":
            return list(exchange["response"]["json"])
    raise AssertionError("GET /models is not recorded")


async def test_folder_paths_has_comfyuis_shape(server, session) -> None:
    async with session.get(f"{server.url}/internal/folder_paths") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        paths = await resp.json()
    assert list(paths) == recorded_models()
    assert all(
        isinstance(v, list) and v and all(os.path.isabs(p) for p in v) for v in paths.values()
    )
    models, output = str(server.models_dir), str(server.output_dir)
    assert paths["checkpoints"] == [f"{models}/checkpoints", f"{output}/checkpoints"]
    assert paths["text_encoders"] == [
        f"{models}/text_encoders",
        f"{models}/clip",
        f"{output}/clip",
    ]
    assert paths["diffusion_models"][-1] == f"{output}/diffusion_models"
    assert paths["loras"][-1] == f"{output}/loras" and paths["vae"][-1] == f"{output}/vae"
    assert paths["configs"] == [f"{models}/configs"]
    assert paths["custom_nodes"] == [str(server.root / "custom_nodes")]
    # ComfyUI's /api prefix covers its own route table, not the /internal sub-app.
    async with session.get(f"{server.url}/api/internal/folder_paths") as resp:
        assert resp.status == 404


async def test_folder_paths_can_name_another_machines_install(tmp_path, session) -> None:
    async with ComfyTestServer(root=tmp_path / "c", reported_root="/opt/ComfyUI") as srv:
        resp = await session.get(f"{srv.url}/internal/folder_paths")
        paths = await resp.json()
    assert paths["checkpoints"] == [
        "/opt/ComfyUI/models/checkpoints",
        "/opt/ComfyUI/output/checkpoints",
    ]
    assert paths["custom_nodes"] == ["/opt/ComfyUI/custom_nodes"]
