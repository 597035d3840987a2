"""`comfyfleet health`: each check on fake trees and a fake ComfyUI; the JSON contract."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from comfyfleet.models.volumes import Detection, ModelRoot, detect_roots
from comfyfleet.runtime import commands
from comfyfleet.runtime.health import (
    Check,
    Report,
    check_comfy,
    check_disk,
    check_gpu,
    check_memory,
    check_model_paths,
    check_volume,
    run_checks,
)


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_volume_check(tmp_path: Path) -> None:
    (tmp_path / "runpod-volume/comfyui/models").mkdir(parents=True)
    found = detect_roots(bases=[tmp_path / "runpod-volume"])
    assert check_volume(found).status == "ok"
    assert check_volume(Detection()).status == "warn"
    missing = detect_roots([tmp_path / "typo"], bases=[])
    check = check_volume(missing)
    assert check.status == "fail" and "typo" in check.detail


def test_model_paths_check(tmp_path: Path) -> None:
    root = ModelRoot(tmp_path / "models")
    (root.path / "clip").mkdir(parents=True)  # legacy name counts for text_encoders
    ok = check_model_paths([root], None)
    assert ok.status == "ok" and "text_encoders" not in ok.data["missing_folders"]
    (root.path / "clip").rmdir()
    assert check_model_paths([root], None).status == "warn"  # no model folder at all
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"a:\n  base_path: {tmp_path / 'gone'}\n  vae: vae\n")
    bad = check_model_paths([root], yaml_file)
    assert bad.status == "fail" and "gone" in bad.detail


def test_disk_and_memory_thresholds(tmp_path: Path) -> None:
    assert check_disk([tmp_path / "not/yet/created"], 0).status == "ok"
    assert check_disk([tmp_path], 1 << 62).status == "fail"
    assert check_memory(0).status == "ok"
    assert check_memory(1 << 62).status == "fail"


def test_gpu_absent_is_not_an_error(tmp_path: Path) -> None:
    check = check_gpu("", device_glob=str(tmp_path / "nvidia[0-9]*"))
    assert check.status == "absent"
    assert Report([check]).status == "ok"


def test_gpu_from_nvidia_smi(tmp_path: Path) -> None:
    smi = script(tmp_path / "nvidia-smi", 'echo "0, NVIDIA L40S, 46068, 512, 550.54.15"\n')
    check = check_gpu(smi, device_glob=str(tmp_path / "none*"))
    assert check.status == "ok" and "NVIDIA L40S" in check.detail
    assert check.data["gpus"][0]["memory_total_mib"] == 46068


def test_gpu_broken_driver_warns(tmp_path: Path) -> None:
    smi = script(tmp_path / "nvidia-smi", 'echo "NVIDIA-SMI has failed" >&2; exit 9\n')
    check = check_gpu(smi, device_glob=str(tmp_path / "none*"))
    assert check.status == "warn" and "NVIDIA-SMI has failed" in check.detail


def test_gpu_device_nodes_without_nvidia_smi(tmp_path: Path) -> None:
    (tmp_path / "nvidia0").touch()
    assert check_gpu("", device_glob=str(tmp_path / "nvidia[0-9]*")).status == "ok"


async def test_comfy_check(fake_comfy) -> None:
    check = await check_comfy(fake_comfy.url)
    assert check.status == "ok" and check.data["version"] == "0.8.0"


async def test_comfy_unreachable_fails(unused_tcp_port: int) -> None:
    check = await check_comfy(f"http://127.0.0.1:{unused_tcp_port}", timeout=2)
    assert check.status == "fail" and "unreachable" in check.detail


def test_report_status_rolls_up() -> None:
    ok, warn, fail = (Check("x", s, "") for s in ("ok", "warn", "fail"))
    assert Report([ok, Check("g", "absent", "")]).status == "ok"
    assert Report([ok, warn]).status == "degraded"
    assert Report([warn, fail]).status == "fail"


async def test_json_contract(tmp_path: Path, fake_comfy) -> None:
    (tmp_path / "models/vae").mkdir(parents=True)
    found = detect_roots([tmp_path / "models"], bases=[])
    report = await run_checks(
        found, comfy_url=fake_comfy.url, nvidia_smi="", device_glob=str(tmp_path / "none*")
    )
    body = json.loads(json.dumps(report.to_dict()))
    assert set(body) == {"status", "checks"} and body["status"] == "ok"
    names = [c["name"] for c in body["checks"]]
    assert names == ["volume", "model_paths", "disk", "memory", "gpu", "comfyui"]
    for check in body["checks"]:
        assert set(check) == {"name", "status", "detail", "data"}
        assert check["status"] in {"ok", "warn", "fail", "absent", "skipped"}


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    commands.register(app)
    return app


def run_cli(cli: typer.Typer, env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, ["health", *args], env=env)


async def test_cli_exit_codes(cli, tmp_path: Path, fake_comfy) -> None:
    (tmp_path / "vol/comfyui/models/loras").mkdir(parents=True)
    env = {
        "COMFYFLEET_VOLUME_BASES": json.dumps([str(tmp_path / "vol")]),
        "COMFYUI_URL": fake_comfy.url,
    }
    ok = await asyncio.to_thread(run_cli, cli, env, "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["checks"][-1]["status"] == "ok"
    env["COMFYFLEET_MIN_FREE_DISK_BYTES"] = str(1 << 62)
    bad = await asyncio.to_thread(run_cli, cli, env, "--no-comfy", "--verbose")
    assert bad.exit_code == 1 and "health: fail" in bad.output and "min_free_bytes" in bad.output
