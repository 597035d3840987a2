"""`comfyfleet provision` against local sources (bare git repositories, a wheel directory):
first run, warm run without the network, upgrade in place, a failed step and a killed run
resumed, two processes at once on one volume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from provision_standins import Sources, make_sources

from comfyfleet.config import Settings
from comfyfleet.runtime.provision import check
from comfyfleet.runtime.provision_config import ProvisionConfig

COMFYFLEET = str(Path(sys.executable).parent / "comfyfleet")
CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.upper().startswith(("COMFYFLEET_", "COMFYUI_", "PIP_"))
}


def provision(
    env: dict[str, str], *args: str, check_rc: bool = True
) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [COMFYFLEET, "provision", *args],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check_rc:
        assert run.returncode == 0, run.stderr + run.stdout
    return run


def steps(stderr: str) -> dict[str, str]:
    """``provision: STEP: done in ...`` lines -> {step: "done" | "already done"}."""
    out = {}
    for line in stderr.splitlines():
        parts = line.split(": ", 2)
        if len(parts) == 3 and parts[2].startswith(("done in", "already done")):
            out[parts[1]] = "done" if parts[2].startswith("done") else "already done"
    return out


def venv_has(volume: Path, module: str) -> bool:
    py = volume / "venv" / "bin" / "python"
    return subprocess.run([str(py), "-c", f"import {module}"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return make_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def provisioned(sources: Sources, tmp_path_factory: pytest.TempPathFactory):
    """One volume provisioned from empty (ComfyUI + a custom node), shared by the tests that
    only read it; returns (volume, env, the first run)."""
    volume = tmp_path_factory.mktemp("volume")
    env = sources.env(volume)
    return volume, env, provision(env)


def test_first_run_installs_every_step_then_writes_the_marker(provisioned, sources) -> None:
    volume, _env, first = provisioned
    node = "node:ComfyUI-StandinNode"
    assert steps(first.stderr) == {
        "comfyui": "done",
        "venv": "done",
        "comfyui-requirements": "done",
        node: "done",
        f"{node}:requirements": "done",
        "model-paths": "done",
    }
    assert first.stdout.startswith(f"{volume}: provisioned in ")
    installed = json.loads((volume / ".comfyfleet/provision/installed.json").read_text())
    assert installed["commits"] == {
        "ComfyUI": sources.v1_commit,
        "ComfyUI-StandinNode": sources.node_commit,
    }
    assert installed["pinned"]["comfyui"]["ref"] == "v0.8.0"
    assert "v0.8.0" in (volume / "ComfyUI/main.py").read_text()
    assert (volume / "ComfyUI/custom_nodes/ComfyUI-StandinNode/__init__.py").exists()
    assert venv_has(volume, "standin_runtime") and venv_has(volume, "standin_node_dep")
    yaml_text = (volume / "ComfyUI/extra_model_paths.yaml").read_text()
    assert f"base_path: {volume}/ComfyUI/models" in yaml_text
    # the container's own Python got none of it
    assert subprocess.run([sys.executable, "-c", "import standin_runtime"]).returncode != 0


def test_a_later_start_is_warm_without_git_or_index(provisioned, sources) -> None:
    volume, env, _ = provisioned
    moved = sources.comfy_repo.with_name("moved.git")
    sources.comfy_repo.rename(moved)  # the git URL now names a path that does not exist
    try:
        offline = {
            **env,
            "COMFYFLEET_PROVISION_FIND_LINKS": "",
            "COMFYFLEET_PROVISION_NO_INDEX": "0",
        }
        offline["COMFYFLEET_PROVISION_INDEX_URL"] = "http://127.0.0.1:9/simple"  # refused
        warm = provision(offline)
        assert warm.stdout.startswith(f"{volume}: already provisioned: ComfyUI v0.8.0")
        assert warm.stderr == ""
        assert provision(offline, "--check").stdout == f"{volume}: provisioned\n"
    finally:
        moved.rename(sources.comfy_repo)


def test_check_says_why_a_volume_is_not_ready(provisioned, tmp_path: Path, sources) -> None:
    _volume, env, _ = provisioned
    empty = provision(sources.env(tmp_path), "--check", check_rc=False)
    assert (empty.returncode, empty.stdout) == (
        1,
        f"{tmp_path}: {tmp_path} is not provisioned yet\n",
    )
    bumped = provision({**env, "COMFYFLEET_COMFYUI_REF": "v0.9.0"}, "--check", check_rc=False)
    assert bumped.returncode == 1
    assert "the pinned versions changed: comfyui v0.8.0 -> v0.9.0" in bumped.stdout


def test_a_version_change_upgrades_in_place(provisioned, sources, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    shutil.copytree(provisioned[0], volume, symlinks=True)
    env = sources.env(
        volume, COMFYFLEET_COMFYUI_REF="v0.9.0", COMFYFLEET_COMFYUI_COMMIT=sources.v2_commit
    )
    run = provision(env)
    node = "node:ComfyUI-StandinNode"
    assert steps(run.stderr) == {
        "comfyui": "done",  # git fetch + checkout of the new ref
        "venv": "already done",
        "comfyui-requirements": "done",  # reinstalled: the commit changed
        node: "already done",
        f"{node}:requirements": "already done",
        "model-paths": "done",  # another volume path
    }
    assert "v0.9.0" in (volume / "ComfyUI/main.py").read_text()
    assert venv_has(volume, "standin_extra")
    assert check(ProvisionConfig.from_env(env)).warm


def test_a_ref_that_is_not_the_pinned_commit_is_refused(sources, tmp_path: Path) -> None:
    env = sources.env(tmp_path, COMFYFLEET_COMFYUI_REF="v0.9.0", COMFYFLEET_CUSTOM_NODES="")
    run = provision(env, check_rc=False)
    assert run.returncode == 1
    assert (
        f"error: comfyui: {sources.comfy_repo} at v0.9.0 is commit {sources.v2_commit}, "
        f"expected {sources.v1_commit} (a moved tag?)" in run.stderr
    )
    assert not (tmp_path / ".comfyfleet/provision/installed.json").exists()


def test_a_failed_step_is_named_and_a_rerun_resumes_there(sources, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    partial = tmp_path / "wheels-missing-one"
    partial.mkdir()
    env = sources.env(
        volume, COMFYFLEET_CUSTOM_NODES="", COMFYFLEET_PROVISION_FIND_LINKS=str(partial)
    )
    failed = provision(env, check_rc=False)
    assert failed.returncode == 1
    assert "error: comfyui-requirements: `" in failed.stderr
    assert "No matching distribution found for standin-runtime==1.0" in failed.stderr
    assert (
        f"full output: {volume}/.comfyfleet/provision/logs/comfyui-requirements.log"
        in failed.stderr
    )
    assert provision(env, "--check", check_rc=False).returncode == 1
    for wheel in sources.wheels.iterdir():
        shutil.copy(wheel, partial)
    resumed = provision(env)
    assert steps(resumed.stderr) == {
        "comfyui": "already done",
        "venv": "already done",
        "comfyui-requirements": "done",
        "model-paths": "done",
    }
    assert venv_has(volume, "standin_runtime")


def swarm_env(sources: Sources, volume: Path, gate: Path) -> dict[str, str]:
    return sources.env(
        volume,
        COMFYFLEET_CUSTOM_NODES="",
        COMFYFLEET_SWARMUI="1",
        COMFYFLEET_SWARMUI_REPO=str(sources.swarm_repo),
        COMFYFLEET_SWARMUI_BUILD="sh build.sh",
        STANDIN_BUILD_GATE=str(gate),
    )


def start(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [COMFYFLEET, "provision"],
        env={**CLEAN, **env},
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        start_new_session=True,
    )


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first ({proc.returncode})")
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def test_a_run_killed_mid_step_is_resumed(sources, tmp_path: Path) -> None:
    volume, gate = tmp_path / "volume", tmp_path / "gate"
    env = swarm_env(sources, volume, gate)
    first = start(env, tmp_path / "first.log")
    waiting = gate.with_name("gate.waiting")
    wait_for(waiting.exists, 90, "the build step started", first)  # blocked inside it
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (volume / ".comfyfleet/provision/installed.json").exists()
    gate.touch()
    resumed = provision(env)
    assert steps(resumed.stderr) == {
        "comfyui": "already done",
        "venv": "already done",
        "comfyui-requirements": "already done",
        "model-paths": "already done",
        "swarmui": "already done",
        "swarmui-build": "done",
    }
    assert (volume / "SwarmUI/src/bin/live_release/built").exists()
    assert (volume / "SwarmUI/src/bin/last_build").read_text() == (
        subprocess.run(
            ["git", "-C", str(volume / "SwarmUI"), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )


def test_two_at_once_one_installs_the_other_waits_and_finds_it_done(sources, tmp_path: Path):
    volume, gate = tmp_path / "volume", tmp_path / "gate"
    env = swarm_env(sources, volume, gate)
    logs = tmp_path / "a.log", tmp_path / "b.log"
    a = start(env, logs[0])
    wait_for(gate.with_name("gate.waiting").exists, 90, "A holds the lock, in its build", a)
    b = start(env, logs[1])
    wait_for(lambda: "waiting for pid" in logs[1].read_text(), 60, "B waits on the lock", b)
    gate.touch()
    assert a.wait(60) == 0 and b.wait(60) == 0
    b_err = logs[1].read_text()
    assert f"waiting for pid {a.pid} on " in b_err
    assert "another process installed it meanwhile; nothing to do" in b_err
    assert "done in" not in b_err  # B ran no step
    assert b.stdout.read().startswith(f"{volume}: already provisioned")
    fetches = (volume / ".comfyfleet/provision/logs/comfyui.log").read_text().count(" fetch ")
    assert fetches == 1


def test_settings_and_the_early_reader_agree(tmp_path: Path) -> None:
    """The worker reads these without pydantic; both readers must see the same config."""
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("# comment\nGGUF https://github.com/city96/ComfyUI-GGUF 795e451 req.txt\n")
    env = {
        "COMFYFLEET_PROVISION": "auto",
        "COMFYFLEET_PROVISION_DIR": str(tmp_path),
        "COMFYFLEET_COMFYUI_REF": "v0.9.0",
        "COMFYFLEET_CUSTOM_NODES": "https://example.com/a/Node-A.git@v1,B=https://x/y@abc",
        "COMFYFLEET_CUSTOM_NODES_FILE": str(nodes),
        "COMFYFLEET_PROVISION_EXTRA_INDEX_URLS": '["https://download.pytorch.org/whl/cu126"]',
        "COMFYFLEET_PROVISION_FIND_LINKS": "/w1,/w2",
        "COMFYFLEET_SWARMUI": "yes",
        "COMFYFLEET_SWARMUI_PORT": "7900",
    }
    for given in ({}, env):
        base = {"COMFYFLEET_PROVISION_DIR": str(tmp_path)} | given
        early = ProvisionConfig.from_env(base)
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("COMFYFLEET_")}
        try:
            os.environ.update(base)
            assert ProvisionConfig.from_settings(Settings()) == early
        finally:
            for k in base:
                os.environ.pop(k, None)
            os.environ.update(saved)
    config = ProvisionConfig.from_env(env)
    assert [(n.name, n.ref, n.requirements) for n in config.nodes] == [
        ("Node-A", "v1", "requirements.txt"),
        ("B", "abc", "requirements.txt"),
        ("GGUF", "795e451", "req.txt"),
    ]
    assert config.comfyui.commit is None  # the default commit pins only the default ref
    assert config.pip_options() == [
        "--extra-index-url", "https://download.pytorch.org/whl/cu126",
        "--find-links", "/w1", "--find-links", "/w2",
    ]  # fmt: skip
    assert ProvisionConfig.from_env({"COMFYFLEET_PROVISION_DIR": "/v"}).comfyui.commit == (
        "fc0cb10bcbee6e73ed3caf34c27f7bde4559a07f"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COMFYFLEET_CUSTOM_NODES": "https://github.com/x/y"}, "COMFYFLEET_CUSTOM_NODES[0]="),
        ({"COMFYFLEET_CUSTOM_NODES": "https://a/N@1,https://b/N@2"},
         "custom node 'N' is listed twice"),
        ({"COMFYFLEET_PROVISION": "sometimes"}, "COMFYFLEET_PROVISION='sometimes'"),
        ({"COMFYFLEET_PROVISION_DIR": "", "COMFYFLEET_VOLUME_BASES": "/nonexistent/v"},
         "no volume is mounted (none of /nonexistent/v exists)"),
    ],
)  # fmt: skip
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in ({"COMFYFLEET_PROVISION_DIR": "/v"} | env).items() if v}
    run = provision(base, check_rc=False)
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_a_terminal_gets_the_live_display(provisioned, sources, tmp_path: Path) -> None:
    import pty

    volume = tmp_path / "volume"
    shutil.copytree(provisioned[0], volume, symlinks=True)
    (volume / ".comfyfleet/provision/installed.json").unlink()  # every step re-checked
    leader, follower = pty.openpty()
    run = subprocess.run(
        [COMFYFLEET, "provision"],
        env={**CLEAN, **sources.env(volume), "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        timeout=120,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert run.returncode == 0
    assert "comfyui: already done" in shown and "model-paths: done in" in shown
    assert "provision: " not in shown  # the rich display, not the log lines
    assert run.stdout.startswith(f"{volume}: provisioned in ")


def test_a_venv_made_anew_gets_every_requirement_again(provisioned, sources, tmp_path: Path):
    volume = tmp_path / "volume"
    shutil.copytree(provisioned[0], volume, symlinks=True)
    shutil.rmtree(volume / "venv")  # e.g. a new image whose Python the old venv pointed at
    env = sources.env(volume)
    assert "venv/bin/python is missing" in provision(env, "--check", check_rc=False).stdout
    run = provision(env)
    assert {k: v for k, v in steps(run.stderr).items() if v == "done"}.keys() >= {
        "venv",
        "comfyui-requirements",
        "node:ComfyUI-StandinNode:requirements",
    }
    assert venv_has(volume, "standin_runtime") and venv_has(volume, "standin_node_dep")
