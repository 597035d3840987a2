"""Start-up: ComfyUI is launched before the worker's heavy imports, from settings read without
pydantic that must agree with `Settings`; the CLI still knows every command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from comfyfleet import cli
from comfyfleet.config import Settings
from comfyfleet.worker.launch import LaunchSettings

from .worker_helpers import VENV_BIN, free_port, make_fake_comfy_dir, wait_until

FIELDS = [f for f in LaunchSettings.__dataclass_fields__]

ENVS = [
    {},
    {
        "COMFYUI_DIR": "/opt/comfyui",
        "COMFYUI_URL": "http://127.0.0.1:9000",
        "COMFYUI_ARGS": "--lowvram --port 9000",
        "COMFYFLEET_COMFY_PYTHON": "/opt/venv/bin/python",
        "COMFYFLEET_COMFY_READY_TIMEOUT": "42.5",
        "COMFYFLEET_MODEL_ROOTS": '["/a/models", "/b"]',
        "COMFYFLEET_VOLUME_BASES": "[]",
        "COMFYFLEET_DATA_DIR": "/data",
        "COMFYFLEET_LOG_LEVEL": "debug",
        "COMFYFLEET_LOG_JSON": "yes",
    },
    {  # comfyfleet's own names win over the legacy ones; names are case-insensitive
        "COMFYFLEET_COMFY_URL": "http://10.0.0.2:8188",
        "COMFYUI_URL": "http://ignored:1",
        "comfyui_dir": "relative/ComfyUI",
        "COMFYFLEET_LOG_JSON": "0",
    },
    {  # the comma-separated form of list settings
        "COMFYFLEET_MODEL_ROOTS": "/a/models, /b",
        "COMFYFLEET_VOLUME_BASES": "/mnt/vol",
    },
]


@pytest.mark.parametrize("env", ENVS)
def test_launch_settings_agree_with_settings(env: dict[str, str], monkeypatch) -> None:
    for name in [*Settings.model_fields, "COMFYUI_URL", "COMFYUI_DIR", "COMFYUI_ARGS"]:
        monkeypatch.delenv(f"COMFYFLEET_{name.upper()}", raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    full, early = Settings(), LaunchSettings.from_env()
    assert {f: getattr(early, f) for f in FIELDS} == {f: getattr(full, f) for f in FIELDS}


@pytest.mark.parametrize(
    "env",
    [
        {"COMFYFLEET_COMFY_READY_TIMEOUT": "soon"},
        {"COMFYFLEET_MODEL_ROOTS": "[not json"},
        {"COMFYFLEET_LOG_JSON": "maybe"},
    ],
)
def test_a_bad_value_is_refused_by_both(env: dict[str, str], monkeypatch) -> None:
    with pytest.raises(ValueError):
        LaunchSettings.from_env(env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        Settings()


HEAVY = ("pydantic", "pydantic_settings", "typer", "aiohttp", "runpod", "comfyfleet.jobs")


def test_comfy_is_launched_before_the_heavy_imports(tmp_path: Path) -> None:
    """``-X importtime`` prints each import as it completes, on the stderr our log lines share:
    everything printed before "ComfyUI launched" was imported before the launch."""
    env = {
        "COMFYUI_DIR": str(make_fake_comfy_dir(tmp_path)),
        "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",
        "COMFYUI_ARGS": "",
        "PATH": str(VENV_BIN),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-X",
                "importtime",
                str(VENV_BIN / "comfyfleet"),
                "worker",
                "--local",
                "--port",
                str(free_port()),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: 'msg="ComfyUI launched"' in log.read_text(errors="replace"),
                60,
                "ComfyUI launched",
            )
        finally:
            proc.terminate()
            proc.wait(30)
    before = log.read_text(errors="replace").split('msg="ComfyUI launched"')[0]
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", before, re.M))
    assert "comfyfleet.comfy.supervisor" in imported
    assert not [m for m in imported if m.split(".")[0] in HEAVY or m in HEAVY]


def test_each_shortcut_command_is_registered_by_its_module() -> None:
    everything = typer.main.get_command(cli.build_app()).commands  # type: ignore[attr-defined]
    assert set(cli.COMMAND_OWNERS) | {"version"} == set(everything)
    for name in cli.COMMAND_OWNERS:
        only = typer.main.get_command(cli.build_app(only=name)).commands  # type: ignore[attr-defined]
        assert name in only and set(only) <= set(everything)


def test_help_lists_every_command() -> None:
    run = subprocess.run(
        [str(VENV_BIN / "comfyfleet"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    for name in [*cli.COMMAND_OWNERS, "version"]:
        assert re.search(rf"│ {re.escape(name)}\s", run.stdout), name


def test_runpod_is_imported_without_its_cpu_probe() -> None:
    """The SDK's debugger still gets the processor name; cpuinfo is itself again afterwards."""
    code = (
        "import json, cpuinfo; real = cpuinfo.get_cpu_info\n"
        "from comfyfleet.worker import sdk\n"
        "runpod = sdk.import_runpod()\n"
        "from runpod.serverless.utils import rp_debugger\n"
        "print(json.dumps([rp_debugger.PROCESSOR, sdk.cpu_brand(),"
        " cpuinfo.get_cpu_info is real, sdk.import_runpod() is runpod]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    processor, brand, restored, same = json.loads(run.stdout.strip().splitlines()[-1])
    assert processor == brand and brand and restored and same
