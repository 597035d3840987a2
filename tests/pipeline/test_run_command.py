"""`comfyfleet run` as a new user runs it: a real subprocess against a ComfyUI test server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .pipeline_helpers import png, w1, w2


def command() -> list[str]:
    script = Path(sys.executable).with_name("comfyfleet")
    found = str(script) if script.exists() else shutil.which("comfyfleet")
    return [found] if found else [sys.executable, "-m", "comfyfleet.cli"]


async def comfyfleet(*args: str, cwd: Path) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        *command(), *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def write(path: Path, graph: object) -> Path:
    path.write_text(json.dumps(graph))
    return path


async def test_run_saves_the_artifacts_and_prints_their_paths(comfy, tmp_path) -> None:
    wf = write(tmp_path / "wf.json", w1(color=0x102030, size=32))
    code, out, err = await comfyfleet("run", str(wf), "--comfy", comfy.url, cwd=tmp_path)
    assert code == 0, err
    [line] = out.splitlines()
    saved = tmp_path / line
    assert saved.parent == tmp_path / "outputs"  # the default --out, relative to the cwd
    assert Image.open(saved).getpixel((0, 0)) == (0x10, 0x20, 0x30)


async def test_run_with_an_image_and_json_output(comfy, tmp_path) -> None:
    wf = write(tmp_path / "invert.json", w2())
    (tmp_path / "photo.png").write_bytes(png(color=(10, 200, 30)))
    code, out, err = await comfyfleet(
        "run", str(wf), "--comfy", comfy.url, "--image", "photo.png",
        "--out", "results", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    [artifact] = result["artifacts"]
    saved = tmp_path / artifact["path"]
    assert tuple(np.asarray(Image.open(saved).convert("RGB"))[0, 0]) == (245, 54, 225)
    assert saved.parent == tmp_path / "results"
    assert set(result["timings"]) >= {"prepare", "upload", "submit", "run", "deliver"}


async def test_run_a_template_with_typed_params(comfy, tmp_path) -> None:
    graph = w1(color=0)
    graph["1"]["inputs"]["width"] = "{{ SIZE }}"
    graph["1"]["inputs"]["color"] = "{{ COLOR }}"
    write(tmp_path / "square.json", graph)
    code, out, err = await comfyfleet(
        "run", "--template", "square", "--templates-dir", str(tmp_path), "--comfy", comfy.url,
        "--param", "SIZE=24", "-p", "COLOR=255", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    img = Image.open(tmp_path / out.strip())
    assert img.size == (24, 64) and img.getpixel((0, 0)) == (0, 0, 255)


async def test_errors_exit_non_zero_with_the_precise_message(comfy, tmp_path) -> None:
    """Four failures at once (each its own process; run concurrently to keep the suite fast)."""
    invalid = w1()
    invalid["1"]["inputs"]["width"] = 100000
    write(tmp_path / "invalid.json", invalid)
    (tmp_path / "broken.json").write_text('{"1": {"class_type": ')
    write(tmp_path / "ok.json", w1())
    comfy.faults.fail_classes = {"SaveImage": "disk full"}
    url = ("--comfy", comfy.url)
    invalid_run, broken_run, failing_run, offline_run = await asyncio.gather(
        comfyfleet("run", "invalid.json", *url, "--out", "a", cwd=tmp_path),
        comfyfleet("run", "broken.json", *url, cwd=tmp_path),
        comfyfleet("run", "ok.json", *url, "--json", cwd=tmp_path),
        comfyfleet("run", "ok.json", "--comfy", "http://127.0.0.1:9", cwd=tmp_path),
    )

    code, out, err = invalid_run
    assert code == 1 and out == ""
    assert "node 1 (EmptyImage) input 'width'" in err
    assert "bigger than max of 16384" in err
    assert not (tmp_path / "a").exists()

    code, _, err = broken_run
    assert code == 1
    assert "error: workflow broken.json is not valid JSON: Expecting value: line 1 column 22" in err

    code, out, _ = failing_run
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "node_execution_error"
    assert error["message"] == "node 2 (SaveImage) failed: RuntimeError: disk full"
    assert error["details"]["class_type"] == "SaveImage"

    code, _, err = offline_run
    assert code == 1
    assert "error: ComfyUI at http://127.0.0.1:9 is unavailable: Cannot connect to host" in err


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    """`--help` is the manual: every command, argument and option of the whole app has text."""
    import typer

    from comfyfleet.cli import build_app

    missing: list[str] = []

    def walk(command: object, path: str) -> None:
        if not (getattr(command, "help", None) or getattr(command, "short_help", None)):
            missing.append(path)
        for param in getattr(command, "params", []):
            if not getattr(param, "help", None):
                missing.append(f"{path} {'/'.join(param.opts)}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    root = typer.main.get_command(build_app())
    walk(root, "comfyfleet")
    assert len(getattr(root, "commands", {})) >= 8  # the walk saw the whole app
    assert missing == []
