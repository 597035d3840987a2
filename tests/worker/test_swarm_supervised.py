"""The SwarmUI the worker launches (`comfyfleet.runtime.swarmui.SwarmProcess`), run on a
checkout of the stand-in SwarmUI: ready by polling, restarted after a crash with its log kept,
given up on after repeated failed start-ups with its last output in the error."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from comfyfleet.errors import ServiceUnavailable
from comfyfleet.runtime.swarmui import SwarmProcess

from .worker_helpers import free_port, wait_until


def _standins():
    """tests/runtime/provision_standins.py (the stand-in SwarmUI's files), loaded by path."""
    if (mod := sys.modules.get("provision_standins")) is not None:
        return mod
    path = Path(__file__).parents[1] / "runtime" / "provision_standins.py"
    spec = importlib.util.spec_from_file_location("provision_standins", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["provision_standins"] = mod
    spec.loader.exec_module(mod)
    return mod


standins = _standins()

LAUNCH = "./launch-linux.sh --launch_mode none --host {host} --port {port}"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The stand-in SwarmUI's files, built (what provisioning leaves on the volume)."""
    swarm = tmp_path / "SwarmUI"
    swarm.mkdir()
    standins.git("init", "-q", cwd=swarm)
    files = {
        "launch-linux.sh": standins.SWARM_LAUNCH,
        "swarm_standin.py": standins.SWARM_SERVER,
        "build.sh": standins.SWARM_BUILD,
    }
    standins.commit_files(swarm, files, "swarm")
    subprocess.run(["sh", "build.sh"], cwd=swarm, check=True, capture_output=True)
    return swarm


def test_ready_restart_after_a_crash_and_logs_kept(checkout: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "swarmui.log"
    swarm = SwarmProcess(checkout, LAUNCH, port=free_port(), log_file=log, ready_timeout=30)
    swarm.start()
    try:
        swarm.wait_ready_blocking(30)
        assert swarm.version == "0.9.7-standin"
        first_pid = swarm.pid
        with pytest.raises(httpx.HTTPError):  # the stand-in dies mid-request
            httpx.post(f"{swarm.url}/API/Crash", json={}, timeout=10)
        wait_until(lambda: swarm.restarts == 1, 30, "a restart")
        swarm.wait_ready_blocking(30)
        assert swarm.pid != first_pid
        answer = httpx.post(f"{swarm.url}/API/GetNewSession", json={}, timeout=10).json()
        assert answer["session_id"].startswith("sess-")
        assert swarm.describe()["state"] == "ready"
    finally:
        swarm.stop()
    text = log.read_text()
    assert text.count("--- launch ") == 2 and "--- launch 2 at " in text
    assert text.count("stand-in SwarmUI listening on") == 2
    assert "POST /API/GetNewSession" in text  # its own request log, kept
    assert swarm.state == "stopped"


def test_gives_up_after_failed_start_ups_with_its_last_words(checkout: Path, tmp_path: Path):
    (checkout / "src/bin/live_release/built").unlink()  # as if the build never ran
    log = tmp_path / "swarmui.log"
    swarm = SwarmProcess(
        checkout, LAUNCH, port=free_port(), log_file=log, ready_timeout=30, backoff=0.01
    )
    swarm.start()
    try:
        with pytest.raises(ServiceUnavailable) as err:
            swarm.wait_ready_blocking(60)
    finally:
        swarm.stop()
    assert swarm.launches == 3
    assert str(err.value) == (
        "SwarmUI failed to start 3 times; last: stand-in SwarmUI: not built (run the build step "
        "first)"
    )
    assert err.value.details["log"] == str(log)
