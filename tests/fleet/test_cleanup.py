"""Every gateway job cleans up after itself: its input files and its outputs leave ComfyUI's
folders, whether it succeeded, failed, timed out or was cancelled. The folders come from the
settings or are learned from ComfyUI (``GET /internal/folder_paths``, then proven with
``/view``); where they stay unknown the gateway says so once and counts what jobs leave.

Real gateway over HTTP, real SQLite queue, the ComfyUI test server as the backend."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfyfleet.comfy.client import Client
from comfyfleet.comfy.folders import candidates, discover
from comfyfleet.config import Settings
from comfyfleet.fleet.folders import BackendFolders, configured
from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.launch import banner
from comfyfleet.testing import ComfyTestServer

from .helpers import final, make_settings, serve, until


def png(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def graph(
    *, image: bool = True, fail: bool = False, partial: bool = False, slow_steps: int = 0
) -> dict[str, Any]:
    """LoadImage (or EmptyImage) -> [slow] -> [fail] -> SaveImage; ``partial`` also saves the
    source image through a second SaveImage, so that a failing job leaves outputs too."""
    source = (
        {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
        if image
        else {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        }
    )
    nodes: dict[str, Any] = {"1": source}
    last: list[Any] = ["1", 0]
    if slow_steps:
        nodes["2"] = {
            "class_type": "FleetTestSlow",
            "inputs": {"image": last, "steps": slow_steps, "seconds_per_step": 0.05},
        }
        last = ["2", 0]
    if partial:
        nodes["5"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}
    if fail:
        nodes["3"] = {"class_type": "FleetTestFail", "inputs": {"image": last, "message": "no"}}
        last = ["3", 0]
    nodes["4"] = {"class_type": "SaveImage", "inputs": {"images": last, "filename_prefix": "c"}}
    return nodes


def body(**kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"workflow": graph(**kw)}
    if kw.get("image", True):
        spec["images"] = [{"name": "in.png", "image": png()}]
    return spec


def files(folder: Path) -> list[str]:
    """Everything under ``folder`` (files and folders), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


async def submit(http: httpx.AsyncClient, **kw: Any) -> str:
    resp = await http.post("/api/v1/tasks", json=body(**kw))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def run_mix(http: httpx.AsyncClient, rounds: int) -> list[dict[str, Any]]:
    """``rounds`` x (W2 with an image, W1 without, a failing job with an image that saved one
    output before failing); then one cancelled while running and one past its deadline."""
    ids = []
    for _ in range(rounds):
        ids.append(await submit(http))
        ids.append(await submit(http, image=False))
        ids.append(await submit(http, fail=True, partial=True, slow_steps=2))
    done = [await final(http, task_id) for task_id in ids]
    slow = await submit(http, slow_steps=200)
    await until(http, slow, "progress")  # its prompt runs in ComfyUI
    assert (await http.post(f"/api/v1/tasks/{slow}/cancel")).status_code == 200
    late = await http.post(
        "/api/v1/tasks", json={**body(slow_steps=200), "timeout": 0.5, "max_attempts": 1}
    )
    done += [await final(http, slow), await final(http, late.json()["id"])]
    return done


async def checked_and_failed(backend: Any, timeout: float = 10.0) -> None:
    """Until a health check of ``backend`` has failed (event-driven)."""

    async def wait() -> None:
        while True:
            changed = backend.change_event()
            if (backend.last_error or "").startswith("health check failed"):
                return
            await changed.wait()

    await asyncio.wait_for(wait(), timeout)


def gateway_settings(tmp_path: Path, backends: list[str], **kw: Any) -> Settings:
    return make_settings(tmp_path, backends, host="127.0.0.1", **kw)


async def test_gateway_jobs_leave_no_files_in_comfyuis_folders(tmp_path: Path) -> None:
    async with ComfyTestServer(root=tmp_path / "comfy", cache="none") as comfy:
        before = (files(comfy.input_dir), files(comfy.output_dir))
        settings = gateway_settings(tmp_path, [f"comfy={comfy.url}"])
        async with serve(create_app(settings)) as served, served.client() as http:
            done = await run_mix(http, rounds=4)
            metrics = (await http.get("/api/v1/metrics")).json()
            prometheus = (await http.get("/metrics")).text
        statuses = [task["status"] for task in done]
        assert statuses == ["succeeded", "succeeded", "failed"] * 4 + ["cancelled", "failed"]
        assert done[-1]["error"]["code"] == "timeout"
        # Not one job file left: inputs, outputs, the jobs' output folders.
        assert (files(comfy.input_dir), files(comfy.output_dir)) == before == ([], [])
    (backend,) = metrics["backends"]
    assert backend["folders"]["input"] == {"path": str(comfy.input_dir), "found": "learned"}
    assert backend["folders"]["output"] == {"path": str(comfy.output_dir), "found": "learned"}
    assert backend["files_left"] == {"input": 0, "output": 0}
    assert 'comfyfleet_backend_files_left_total{backend="comfy",folder="input"} 0.0' in prometheus


async def test_folders_are_learned_from_internal_folder_paths(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # a ComfyUI install here, but not the server's
    for sub in ("input", "output"):
        (elsewhere / sub).mkdir(parents=True)
    async with (
        ComfyTestServer(root=tmp_path / "a") as here,
        ComfyTestServer(root=tmp_path / "b", reported_root=elsewhere) as lying,
        ComfyTestServer(root=tmp_path / "c", reported_root="/nonexistent/ComfyUI") as remote,
        Client(here.url) as a,
        Client(lying.url) as b,
        Client(remote.url) as c,
    ):
        answer = await a.folder_paths()
        assert answer is not None
        found = await discover(a)
        mismatched = await discover(b)
        unknown = await discover(c)
    # The candidates come from main.py's entries in the model folder lists.
    assert candidates(answer)["output"][0] == here.output_dir
    assert candidates(answer)["input"] == [here.input_dir]
    assert (found.input, found.output) == (here.input_dir, here.output_dir)
    assert found.found == {"output": "learned", "input": "learned"} and found.notes == ()
    # Paths that exist here but are not the server's are refused: /view did not serve a file.
    assert (mismatched.input, mismatched.output) == (None, None)
    assert all("is not the folder ComfyUI serves" in note for note in mismatched.notes)
    assert files(elsewhere) == ["input", "output"]  # the probes' markers are gone
    assert (unknown.input, unknown.output) == (None, None)
    assert [n.split(":")[0] for n in unknown.notes] == [
        "the output folder is unknown",
        "the input folder is unknown",
    ]
    assert "/nonexistent/ComfyUI/input) is not on this host" in unknown.notes[1]


def test_candidates_of_a_comfyui_with_extra_model_paths_and_its_own_output_dir() -> None:
    """main.py loads extra_model_paths.yaml first, then appends the output folder's entries;
    a model root also holds checkpoints/, vae/, ... and is tried after (it has configs/)."""
    base, extra, out = "/opt/ComfyUI", "/mnt/models", "/data/out"
    answer: dict[str, Any] = {
        "checkpoints": [f"{base}/models/checkpoints", f"{extra}/checkpoints", f"{out}/checkpoints"],
        "configs": [f"{base}/models/configs", f"{extra}/configs"],
        "loras": [f"{base}/models/loras", f"{extra}/loras", f"{out}/loras"],
        "vae": [f"{base}/models/vae", f"{extra}/vae", f"{out}/vae"],
        "text_encoders": [
            f"{base}/models/text_encoders",
            f"{base}/models/clip",
            f"{extra}/clip",
            f"{out}/clip",
        ],
        "diffusion_models": [
            f"{base}/models/unet",
            f"{base}/models/diffusion_models",
            f"{extra}/diffusion_models",
            f"{out}/diffusion_models",
        ],
        "custom_nodes": [f"{base}/custom_nodes"],
        "upscale_models": "not a list",
    }
    found = candidates(answer)
    # Every directory holding main.py's five entries is a candidate (each is proven in
    # turn); the last-appended first, model roots (with configs/) after the others.
    assert found["output"] == [Path(out), Path(extra), Path(f"{base}/models")]
    assert found["input"] == [Path("/data/input"), Path("/mnt/input"), Path(f"{base}/input")]
    answer["loras"].remove(f"{extra}/loras")  # not all five: not an output folder
    answer["configs"] = []  # and without configs/, base/models still only follows out
    assert candidates(answer)["output"] == [Path(out), Path(f"{base}/models")]
    assert candidates({})["output"] == [] and candidates({"x": 1})["input"] == []


async def test_folders_from_the_settings(tmp_path: Path) -> None:
    async with ComfyTestServer(root=tmp_path / "comfy") as comfy:
        url = comfy.url
        per_backend = Settings(
            backends=[f"gpu0={url}", "gpu1=http://127.0.0.1:9"],
            backend_folders={"gpu0": {"input": comfy.input_dir}, url: {"output": tmp_path}},
        )
        single = Settings(
            backends=[url], comfy_input_dir=comfy.input_dir, comfy_output_dir=comfy.output_dir
        )
        pooled = Settings(backends=[url], comfy_input_dir=comfy.input_dir)
        assert configured(per_backend, "gpu0", url) == {"input": comfy.input_dir, "output": None}
        assert configured(per_backend, "x", url) == {"input": None, "output": tmp_path}
        assert configured(per_backend, "gpu1", "http://127.0.0.1:9") == {
            "input": None,
            "output": None,
        }
        assert configured(single, "host:port", url) == {
            "input": comfy.input_dir,
            "output": comfy.output_dir,
        }
        # The single-backend variables never apply to a backend a worker pool adds.
        assert configured(pooled, "pool-1", "http://127.0.0.1:9") == {
            "input": None,
            "output": None,
        }
        async with Client(url) as client:
            partly = BackendFolders("gpu0", configured(per_backend, "gpu0", url))
            wrong = BackendFolders("x", configured(per_backend, "x", url))
            before = partly.snapshot()["folders"]  # before any contact: what the settings say
            assert before["input"] == {"path": str(comfy.input_dir), "found": "settings"}
            assert before["output"] is None and before["learned"] is False
            await partly.learn(client)
            await wrong.learn(client)
    # The output folder is learned; the input folder is the one set.
    assert (partly.input, partly.output) == (comfy.input_dir, comfy.output_dir)
    assert partly.snapshot()["folders"]["input"]["found"] == "settings"
    assert partly.snapshot()["folders"]["output"]["found"] == "learned"
    # A wrong setting stands (the operator's word) but is reported.
    assert wrong.output == tmp_path
    assert any("set in the settings" in note for note in wrong.folders.notes)


async def test_a_backend_with_folders_set_shows_them_while_its_comfyui_is_down(
    tmp_path: Path,
) -> None:
    url = "http://127.0.0.1:9"  # nothing listens
    settings = gateway_settings(
        tmp_path, [f"down={url}"], backend_folders={"down": {"input": tmp_path, "output": tmp_path}}
    )
    async with serve(create_app(settings)) as served, served.client() as http:
        said = banner(served.gateway, "127.0.0.1", 8080)
        backends = await http.get("/api/v1/backends")
    assert backends.status_code == 200
    (snap,) = backends.json()
    assert snap["folders"]["output"] == {"path": str(tmp_path), "found": "settings"}
    assert f"down  input {tmp_path}, output {tmp_path} (settings)" in said


async def test_unknown_folders_are_said_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="comfyfleet.fleet.folders")
    async with ComfyTestServer(
        root=tmp_path / "comfy", cache="none", reported_root="/nonexistent/ComfyUI"
    ) as comfy:
        settings = gateway_settings(tmp_path, [f"far={comfy.url}"])
        async with serve(create_app(settings)) as served, served.client() as http:
            said = banner(served.gateway, "127.0.0.1", 8080)
            tasks = [await submit(http, image=i % 3 != 2, fail=i % 4 == 3) for i in range(8)]
            done = [await final(http, task_id) for task_id in tasks]
            # ComfyUI dies and comes back: health checks fail, then the folders are learned
            # again at the next contact, with the same outcome (not said twice).
            backend = served.gateway.fleet.agents["far"].backend
            await comfy.die()
            backend.mark_unhealthy("killed on purpose")  # (the next check sees it gone)
            await checked_and_failed(backend)
            await comfy.start()
            again = await final(http, await submit(http, image=False))
            metrics = (await http.get("/api/v1/metrics")).json()
            prometheus = (await http.get("/metrics")).text
        inputs, outputs = (
            files(comfy.input_dir),
            [p for p in files(comfy.output_dir) if (comfy.output_dir / p).is_file()],
        )
    assert [t["status"] for t in done].count("failed") == 2 and again["status"] == "succeeded"
    (snap,) = metrics["backends"]
    # What the metric says is left is what is there: inputs uploaded, outputs saved.
    assert snap["files_left"] == {"input": len(inputs), "output": len(outputs)}
    assert (len(inputs), len(outputs)) == (6, 7)  # 6 jobs had an image, 6 + 1 succeeded
    assert f'backend="far",folder="input"}} {len(inputs)}.0' in prometheus
    assert f'backend="far",folder="output"}} {len(outputs)}.0' in prometheus
    assert snap["folders"]["input"] is None and snap["folders"]["learned"] is True
    assert "far  input and output learned from ComfyUI when it answers" in said
    said_unknown = [r.getMessage() for r in caplog.records if "folder is unknown" in r.getMessage()]
    assert len(said_unknown) == 1, said_unknown  # once, not per health check
    assert re.search(
        r"the output folder is unknown: .*not on this host; the input folder is unknown: .*"
        r"Its jobs leave their input files and outputs in ComfyUI's folders",
        said_unknown[0],
    )
