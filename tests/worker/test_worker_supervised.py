"""`comfyfleet worker --local` launching ComfyUI itself from COMFYUI_DIR (a main.py that runs
the test server): readiness, volume model paths, a crash mid-job, restart, shutdown."""

from __future__ import annotations

import json
import threading
import time

import httpx
import psutil
import pytest

from .worker_helpers import WorkerProcess, free_port, make_fake_comfy_dir

SLOW_JOB = {
    "workflow": {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": 400, "seconds_per_step": 0.05, "seed": 1},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    }
}
QUICK_JOB = {
    "workflow": {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
}


@pytest.fixture(scope="module")
def comfy_dir(tmp_path_factory):
    return make_fake_comfy_dir(tmp_path_factory.mktemp("comfy"))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    models = tmp_path_factory.mktemp("volume") / "comfyui" / "models"
    (models / "checkpoints").mkdir(parents=True)
    return models


@pytest.fixture(scope="module")
def comfy_url():
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def worker(tmp_path_factory, comfy_dir, volume, comfy_url):
    env = {
        "COMFYUI_DIR": str(comfy_dir),
        "COMFYUI_URL": comfy_url,
        "COMFYUI_ARGS": "--disable-auto-launch",
        "COMFYFLEET_MODEL_ROOTS": json.dumps([str(volume)]),
        "COMFYFLEET_COMFY_INPUT_DIR": str(comfy_dir / "input"),
        "COMFYFLEET_COMFY_OUTPUT_DIR": str(comfy_dir / "output"),
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
    }
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


def output(answer: dict) -> dict:
    assert answer["status"] == "COMPLETED", answer
    return answer["output"]


def comfy_state(worker) -> dict:
    """Health until the launched ComfyUI is ready (jobs would wait for it anyway)."""
    end = time.monotonic() + 60
    while True:
        comfy = output(worker.runsync({"action": "health"}))["comfy"]
        if (comfy["state"] == "ready" and comfy["reachable"]) or time.monotonic() > end:
            return comfy
        time.sleep(0.05)


def test_comfy_is_launched_with_volume_models_wired(worker, comfy_dir, volume, comfy_url):
    comfy = comfy_state(worker)
    assert comfy["managed"] and comfy["state"] == "ready" and comfy["restarts"] == 0
    cmdline = psutil.Process(comfy["pid"]).cmdline()
    port = comfy_url.rsplit(":", 1)[1]
    assert cmdline[1:] == [
        "main.py",
        "--disable-auto-launch",
        "--port",
        port,
        "--listen",
        "127.0.0.1",
    ]
    text = (comfy_dir / "extra_model_paths.yaml").read_text()
    assert f"base_path: {volume}" in text and "checkpoints: checkpoints" in text
    assert output(worker.runsync(QUICK_JOB))["images"][0]["type"] == "base64"


def test_crash_mid_job_fails_that_job_and_the_next_one_runs(worker, comfy_url):
    before = comfy_state(worker)
    job_id = worker.run(SLOW_JOB)
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(worker.status(job_id, timeout=90)))
    thread.start()
    end = time.monotonic() + 30
    while not httpx.get(f"{comfy_url}/queue").json()["queue_running"]:
        assert time.monotonic() < end, "the job never started running"
        time.sleep(0.01)
    httpx.post(f"{comfy_url}/_testing/die")
    thread.join(60)
    assert answer["status"] == "FAILED"
    assert answer["error"] == (
        "ComfyUI exited with code 86 while the job was running; the worker is restarting it "
        "— submit the job again"
    )
    after_crash = output(worker.runsync(QUICK_JOB))  # waits for the relaunched ComfyUI
    assert after_crash["comfyfleet"]["status"] == "succeeded"
    comfy = comfy_state(worker)
    assert comfy["restarts"] == 1 and comfy["pid"] != before["pid"]
    log = [ln for ln in worker.log_text().splitlines() if f"job_id={job_id}" in ln]
    assert any("code=comfy_crashed" in ln for ln in log)


def test_shutdown_stops_the_comfy_it_launched(worker):
    pid = comfy_state(worker)["pid"]
    out = output(worker.runsync({"action": "shutdown"}))
    assert out == {"success": True, "shutdown": True, "comfy_stopped": True}
    assert not psutil.pid_exists(pid)
    health = output(worker.runsync({"action": "health"}))
    assert not health["healthy"] and health["comfy"]["state"] == "stopped"
    answer = worker.runsync(QUICK_JOB)
    assert answer["error"] == "ComfyUI was shut down by a shutdown action; send no more jobs"
