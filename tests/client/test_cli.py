"""``comfyfleet submit | status | cancel | result`` as a user runs them (real processes, not a
TTY, so JSON) against a real gateway with the test server behind it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer
from gateway.gateway_helpers import Served, serve

from .client_helpers import png

COMFYFLEET = str(Path(sys.executable).with_name("comfyfleet"))
BAD = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


@pytest.fixture
async def gateway(
    make_gateway_settings, comfy_process: ComfyTestServer, templates: Path
) -> AsyncIterator[Served]:
    settings = make_gateway_settings(
        backends=[f"comfy={comfy_process.url}"],
        templates_dir=templates,
        api_keys=["sub-key:submit"],
    )
    async with serve(create_app(settings)) as served:
        yield served


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("COMFYFLEET_")}
    proc = await asyncio.create_subprocess_exec(
        COMFYFLEET,
        *args,
        env={**full, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def env_for(gateway: Served) -> dict[str, str]:
    return {"COMFYFLEET_GATEWAY_URL": gateway.url, "COMFYFLEET_API_KEY": "sub-key"}


async def test_submit_wait_saves_outputs(gateway: Served, tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(png((255, 0, 0)))
    second.write_bytes(png((0, 0, 255)))
    code, out, err = await cli(
        "submit", "--template", "pair", "-i", str(first), "-i", str(second),
        "--prompt", "owl", "--seed", "7", "--wait", "--out", str(tmp_path / "out"),
        env=env_for(gateway),
    )  # fmt: skip
    assert code == 0, err
    body = json.loads(out)
    assert body["status"] == "succeeded" and body["seeds"] == {"3": {"seed": 7}}
    paths = sorted(Path(o["path"]) for o in body["outputs"])
    assert [p.name for p in paths] == ["owl-inverted_00001_.png", "owl-kept_00001_.png"]
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in paths)


async def test_submit_then_status_result_and_cancel(gateway: Served, tmp_path: Path) -> None:
    workflow = tmp_path / "solid.json"
    workflow.write_text(
        json.dumps({**BAD, "1": {**BAD["1"], "inputs": {**BAD["1"]["inputs"], "width": 4}}})
    )
    env = env_for(gateway)
    code, out, err = await cli("submit", str(workflow), env=env)
    assert code == 0, err
    task_id = json.loads(out)["id"]
    code, out, err = await cli("result", task_id, "--out", str(tmp_path / "r"), env=env)
    assert code == 0, err
    (saved,) = json.loads(out)["outputs"]
    assert Path(saved["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = await cli("status", task_id, env=env)
    assert code == 0 and json.loads(out)["status"] == "succeeded", err
    code, out, err = await cli("cancel", task_id, env=env)
    assert code == 0, err
    assert json.loads(out) == {
        "id": task_id,
        "status": "succeeded",
        "cancel_requested": True,
        "note": "it had already finished",
    }


async def test_invalid_workflow_exits_1_naming_node_and_input(
    gateway: Served, tmp_path: Path
) -> None:
    workflow = tmp_path / "bad.json"
    workflow.write_text(json.dumps(BAD))
    code, out, _ = await cli("submit", str(workflow), "--wait", env=env_for(gateway))
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "workflow_invalid"
    assert "node 1 (EmptyImage) input 'width'" in error["message"]


async def test_key_from_flag_or_env_and_missing_key(gateway: Served, tmp_path: Path) -> None:
    code, out, _ = await cli("status", "nope", "--target", gateway.url)
    assert code == 1 and json.loads(out)["error"]["code"] == "unauthorized"
    code, out, _ = await cli("status", "nope", "--target", gateway.url, "--api-key", "sub-key")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"


async def test_no_target_is_a_precise_error() -> None:
    code, out, _ = await cli("status", "x")
    assert code == 1
    assert "--target" in json.loads(out)["error"]["message"]
