"""End to end: `comfyfleet worker --local` on an empty directory standing in for the volume
provisions ComfyUI (and SwarmUI), serves a job and the SwarmUI actions; started again with
every source gone (git URLs naming deleted paths, a refused package index) it starts warm and
serves again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from provision_standins import make_sources

COMFYFLEET = str(Path(sys.executable).parent / "comfyfleet")
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAFElEQVR4nGM8ISfHAANMDEgANwcANHYBDK9qubUAAAAA"
    "SUVORK5CYII="
)
JOB = {
    "workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
    },
    "images": [{"name": "photo.png", "image": PIXEL}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith(("COMFYFLEET_", "COMFYUI_", "PIP_", "SWARM", "RUNPOD_"))
            and k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY")
        }
        self.proc = subprocess.Popen(
            [COMFYFLEET, "worker", "--local", "--port", str(self.port)],
            env={**clean, "NO_PROXY": "127.0.0.1", **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
            try:
                httpx.get(f"{self.url}/docs", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < end, "worker's local API never answered"
                time.sleep(0.05)

    def runsync(self, job_input: dict) -> dict:
        return httpx.post(f"{self.url}/runsync", json={"input": job_input}, timeout=60).json()

    def wait_ready(self) -> dict:
        """`ready` until it says ready (ComfyUI boots after the worker's API is up)."""
        end = time.monotonic() + 60
        while True:
            answer = self.runsync({"action": "ready"})
            if answer["status"] == "COMPLETED" or time.monotonic() > end:
                return answer
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def sources(tmp_path: Path):
    return make_sources(tmp_path / "sources")


def serves(worker: Worker) -> None:
    ready = worker.wait_ready()
    assert ready["status"] == "COMPLETED", ready
    assert ready["output"]["ready"] is True
    assert ready["output"]["session_id"].startswith("sess-")
    assert ready["output"]["version"] == "0.9.7-standin"
    done = worker.runsync(JOB)
    assert done["status"] == "COMPLETED", done
    assert done["output"]["images"][0]["filename"] == "inv_00001_.png"
    swarm = worker.runsync(
        {"action": "swarm_api", "path": "/API/GenerateText2Image", "payload": {"prompt": "fox"}}
    )
    assert swarm["output"] == {
        "success": True,
        "response": {"images": ["View/local/raw/x.png"], "echo": {"prompt": "fox"}},
    }


def test_worker_provisions_an_empty_volume_then_starts_warm_offline(sources, tmp_path: Path):
    volume = tmp_path / "volume"
    volume.mkdir()
    comfy_port = free_port()
    env = sources.env(
        volume,
        COMFYUI_URL=f"http://127.0.0.1:{comfy_port}",
        COMFYUI_ARGS=f"--listen 127.0.0.1 --port {comfy_port}",
        COMFYFLEET_DATA_DIR=str(tmp_path / "data"),
        COMFYFLEET_SWARMUI="1",
        COMFYFLEET_SWARMUI_REPO=str(sources.swarm_repo),
        COMFYFLEET_SWARMUI_BUILD="sh build.sh",
        COMFYFLEET_SWARMUI_PORT=str(free_port()),
    )
    cold = Worker(env, tmp_path / "cold.log")
    try:
        serves(cold)
    finally:
        cold.stop()
    cold_log = cold.log.read_text()
    assert "provision: comfyui: done in" in cold_log
    assert "provision: swarmui-build: done in" in cold_log
    assert f"stand-in ComfyUI v0.8.0 on python {volume}/venv" in cold_log

    for repo in (sources.comfy_repo, sources.node_repo, sources.swarm_repo):
        repo.rename(repo.with_name(repo.name + ".gone"))  # git URLs now name missing paths
    offline = env | {
        "COMFYFLEET_PROVISION_FIND_LINKS": "",
        "COMFYFLEET_PROVISION_NO_INDEX": "0",
        "COMFYFLEET_PROVISION_INDEX_URL": "http://127.0.0.1:9/simple",  # refused
    }
    warm = Worker(offline, tmp_path / "warm.log")
    try:
        serves(warm)
    finally:
        warm.stop()
    warm_log = warm.log.read_text()
    assert "volume is provisioned; starting warm" in warm_log
    assert "provision: comfyui" not in warm_log
    assert (volume / ".comfyfleet/logs/swarmui.log").read_text().count("--- launch 1 ") == 2


def test_a_worker_whose_install_fails_says_which_step_and_exits_1(sources, tmp_path: Path):
    volume = tmp_path / "volume"
    env = sources.env(volume, COMFYFLEET_COMFYUI_REPO=str(tmp_path / "missing.git"))
    clean = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("COMFYFLEET_", "PIP_"))
    }
    run = subprocess.run(
        [COMFYFLEET, "worker", "--local", "--port", str(free_port())],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert 'msg="provisioning failed: comfyui: `git -C ' in run.stderr
    assert "does not appear to be a git repository" in run.stderr
    assert "Traceback" not in run.stderr
