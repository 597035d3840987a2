"""Done-when: the same ten-line script (two images, a prompt, a seed; wait with progress; save
every output) against (a) the gateway, (b) the worker behind the runpod SDK's local API server,
(c) the ComfyUI test server directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import Image

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer
from gateway.gateway_helpers import serve
from worker.worker_helpers import WorkerProcess

from .client_helpers import png, ten_line_script

RED, BLUE, YELLOW = (255, 0, 0), (0, 0, 255), (255, 255, 0)


def inputs(tmp_path: Path) -> tuple[Path, bytes]:
    first = tmp_path / "first.png"
    first.write_bytes(png(RED))
    return first, png(BLUE)


def check_outputs(printed: dict, out: Path) -> None:
    """Both outputs saved under the prompt's prefix, with the images where the graph put them
    (first kept, second inverted); the seed reached the slow node."""
    saved = sorted(Path(p) for p in printed["saved"])
    assert [p.parent for p in saved] == [out, out]
    names = sorted(p.name for p in saved)
    assert names == ["red-fox-inverted_00001_.png", "red-fox-kept_00001_.png"], names
    colours = {p.name: Image.open(p).convert("RGB").getpixel((0, 0)) for p in saved}
    assert colours == {names[0]: YELLOW, names[1]: RED}
    assert printed["result"].seeds == {"3": {"seed": 1234}}
    assert printed["progress"], "no progress event at all"


def node_steps(printed: dict) -> list[str]:
    return [what for _s, what, _p in printed["progress"] if what.startswith("node 3")]


async def test_gateway(
    tmp_path: Path, make_gateway_settings, comfy_process: ComfyTestServer, templates: Path
) -> None:
    settings: Settings = make_gateway_settings(
        backends=[f"comfy={comfy_process.url}"], templates_dir=templates
    )
    async with serve(create_app(settings)) as served:
        image, data = inputs(tmp_path)
        printed = await asyncio.to_thread(
            ten_line_script, served.url, image, data, tmp_path / "out"
        )
    check_outputs(printed, tmp_path / "out")
    assert printed["result"].raw["source"] == "native"  # it went through the task API
    # SSE carried the slow node's steps
    assert "node 3 (FleetTestSlow) step 3/3" in node_steps(printed), printed["progress"]


def test_worker_local_api(tmp_path: Path, worker: WorkerProcess) -> None:
    image, data = inputs(tmp_path)
    printed = ten_line_script(worker.url, image, data, tmp_path / "out")
    check_outputs(printed, tmp_path / "out")
    assert printed["result"].raw["status"] == "COMPLETED"  # RunPod's answer shape


def test_comfy_directly(tmp_path: Path, comfy_process: ComfyTestServer, templates: Path) -> None:
    image, data = inputs(tmp_path)
    printed = ten_line_script(
        comfy_process.url, image, data, tmp_path / "out", templates_dir=templates
    )
    check_outputs(printed, tmp_path / "out")
    assert "node 3 (FleetTestSlow) step 3/3" in node_steps(printed), printed["progress"]
