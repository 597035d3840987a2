"""The image's entrypoint with COMFYFLEET_PROVISION=auto, run for real (the real CLI, local
sources): it provisions the volume, wires the models into the volume's ComfyUI and hands the
command a COMFYUI_DIR pointing there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from provision_standins import make_sources

DOCKER = Path(__file__).parents[2] / "docker"


def test_entrypoint_provisions_then_runs_the_command_from_the_volume(tmp_path: Path) -> None:
    sources = make_sources(tmp_path / "sources")
    volume = tmp_path / "volume"
    volume.mkdir()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("COMFYFLEET_", "COMFYUI_", "PIP_", "MODELS"))
    }
    env = {
        **clean,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "COMFYUI_DIR": "/opt/comfyui",  # the image's default, overridden by the provisioned one
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        **sources.env(volume, COMFYFLEET_CUSTOM_NODES=""),
    }
    run = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "health", "--no-comfy", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "provision: comfyui: done in" in run.stderr
    report = json.loads(run.stdout)
    paths = next(c for c in report["checks"] if c["name"] == "model_paths")
    assert paths["data"]["extra_model_paths"] == str(volume / "ComfyUI/extra_model_paths.yaml")
    again = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "provision", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (again.returncode, again.stdout) == (0, f"{volume}: provisioned\n")
    assert "provision: " not in again.stderr  # warm: no step ran
