"""The warm-up workflow (COMFYFLEET_WARMUP_WORKFLOW) through `comfyfleet worker --local`.

To hold the worker in its warming state for as long as the test needs, without a timed wait,
ComfyUI is kept busy first: a long FleetTestSlow prompt (10 ms per step, a step being where an
interrupt lands) is running before the worker starts, so the warm-up prompt waits in ComfyUI's
queue behind it. Interrupting that prompt lets the warm-up run, and ``ready`` must then say so.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from comfyfleet.testing import ComfyTestServer

from .worker_helpers import WorkerProcess, free_port, make_fake_comfy_dir, wait_until

WARMING = "ComfyUI is warming up: the warm-up workflow is still running"


def slow_graph(steps: int, prefix: str) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": 0.01, "seed": 1},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


BASE_ENV = {"COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0", "COMFYFLEET_MIN_FREE_DISK_BYTES": "0"}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    server = ComfyTestServer.start_subprocess(root=tmp_path_factory.mktemp("comfy"))
    yield server
    server.stop()


def ready(worker: WorkerProcess) -> dict:
    return worker.runsync({"action": "ready"})


def test_ready_says_warming_until_the_warm_up_has_run(tmp_path, comfy):
    blocker = str(uuid.uuid4())
    body = {"prompt": slow_graph(100_000, "blocker"), "client_id": "t", "prompt_id": blocker}
    assert httpx.post(f"{comfy.url}/prompt", json=body).status_code == 200
    wait_until(
        lambda: httpx.get(f"{comfy.url}/queue").json()["queue_running"], 30, "blocker running"
    )
    warmup = slow_graph(3, "warmup")
    (tmp_path / "warmup.json").write_text(json.dumps(warmup))
    env = {
        **BASE_ENV,
        "COMFYUI_URL": comfy.url,
        "COMFYFLEET_WARMUP_WORKFLOW": str(tmp_path / "warmup.json"),
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        first = ready(worker)
        assert first["status"] == "FAILED" and first["error"] == WARMING, first
        health = worker.runsync({"action": "health"})["output"]
        assert health["warmup"]["status"] == "warming"

        httpx.post(f"{comfy.url}/interrupt", json={"prompt_id": blocker})
        answer = wait_until(
            lambda: (a := ready(worker))["status"] == "COMPLETED" and a, 60, "ready after warm-up"
        )
        out = answer["output"]
        assert out["ready"] and out["status"] == "ready"
        assert out["warmup"]["status"] == "ready" and out["warmup"]["reason"] is None
        assert out["warmup"]["seconds"] > 0
        history = httpx.get(f"{comfy.url}/history").json()
        ran = [e for e in history.values() if e["prompt"][2] == warmup]
        assert len(ran) == 1 and ran[0]["status"]["status_str"] == "success"
    finally:
        worker.stop()


def test_a_failed_warm_up_is_reported_and_jobs_still_run(tmp_path):
    """With COMFYUI_DIR the warm-up waits for the ComfyUI the worker launched; a warm-up that
    ComfyUI rejects leaves the worker ready, with the reason."""
    bad = slow_graph(1, "warmup")
    bad["1"]["inputs"]["width"] = 0
    (tmp_path / "warmup.json").write_text(json.dumps(bad))
    env = {
        **BASE_ENV,
        "COMFYUI_DIR": str(make_fake_comfy_dir(tmp_path)),
        "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",
        "COMFYUI_ARGS": "--disable-auto-launch",
        "COMFYFLEET_VOLUME_BASES": "[]",
        "COMFYFLEET_WARMUP_WORKFLOW": str(tmp_path / "warmup.json"),
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        answer = wait_until(
            lambda: (a := ready(worker))["status"] == "COMPLETED" and a, 60, "ready"
        )
        warm = answer["output"]["warmup"]
        assert warm["status"] == "failed"
        assert "node 1 (EmptyImage): Value 0 smaller than min of 1" in warm["reason"], warm
        job = worker.runsync({"workflow": slow_graph(1, "after")})
        assert job["status"] == "COMPLETED", job
    finally:
        worker.stop()
