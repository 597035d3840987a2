"""`comfyfleet paths` and `comfyfleet models sync|list` end to end (CLI runner, loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from comfyfleet.models import commands

BODY = b"model-bytes" * 300
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    commands.register(app)
    return app


def invoke(cli: typer.Typer, args: list[str], **env: str):
    base = {"COMFYFLEET_VOLUME_BASES": "[]", "MODELS": ""}
    return CliRunner().invoke(cli, args, env={**base, **env})


def test_paths_detects_writes_and_links(cli, tmp_path: Path) -> None:
    vol = tmp_path / "workspace/ComfyUI/models"
    (vol / "loras").mkdir(parents=True)
    out = tmp_path / "comfy/extra_model_paths.yaml"
    env = {"COMFYFLEET_VOLUME_BASES": json.dumps([str(tmp_path / "workspace")])}
    args = ["paths", "--write", str(out), "--create", "--symlink", str(tmp_path / "comfy/models")]
    first = invoke(cli, args, **env)
    assert first.exit_code == 0, first.output
    config = yaml.safe_load(out.read_text())
    (section,) = config.values()
    assert section["base_path"] == str(vol) and section["is_default"] is True
    assert (vol / "checkpoints").is_dir()  # --create
    assert (tmp_path / "comfy/models/loras").resolve() == (vol / "loras").resolve()
    text = out.read_text()
    again = invoke(cli, args, **env)
    assert again.exit_code == 0 and out.read_text() == text
    assert "0 made" in again.output


def test_paths_without_any_root_fails_clearly(cli) -> None:
    result = invoke(cli, ["paths"])
    assert result.exit_code == 1 and "no model root found" in result.output


def test_paths_prints_yaml_for_explicit_roots(cli, tmp_path: Path) -> None:
    result = invoke(cli, ["paths", "--root", str(tmp_path / "a"), "--root", str(tmp_path)])
    assert result.exit_code == 0
    assert "does not exist" in result.output  # a/ is missing and said so
    assert yaml.safe_load(result.stdout.split("\n", 1)[1]) is not None


def test_paths_root_above_the_models_uses_them_and_says_so(cli, tmp_path: Path) -> None:
    (tmp_path / "vol/comfyui/models/loras").mkdir(parents=True)
    result = invoke(cli, ["paths", "--root", str(tmp_path / "vol")])
    assert result.exit_code == 0, result.output
    (section,) = yaml.safe_load(result.stdout.split("\n", 1)[1]).values()
    assert section["base_path"] == str(tmp_path / "vol/comfyui/models")
    assert f"using the models at {tmp_path / 'vol/comfyui/models'}" in result.stderr


def test_paths_root_without_models_warns(cli, tmp_path: Path) -> None:
    (tmp_path / "vol/notes").mkdir(parents=True)
    result = invoke(cli, ["paths", "--root", str(tmp_path / "vol")])
    assert result.exit_code == 0
    assert f"warning: root {tmp_path / 'vol'} holds none of ComfyUI's model folders" in (
        result.stderr
    )


def test_manifest_error_exits_2_with_the_precise_message(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("- url: https://x/a.bin\n  folder: vae\n  sha256: short\n")
    result = invoke(cli, ["models", "sync", "-m", str(manifest), "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{manifest}: entry 0, field 'sha256': must be 64 hex" in result.output


async def test_sync_then_list(cli, fileserver, hf_cache, tmp_path: Path) -> None:
    url = fileserver.add("/dl/a.safetensors", BODY)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump([{"url": url, "folder": "loras", "sha256": SHA}]))
    cache = tmp_path / "hfcache"
    hf_cache(cache, "org/vae", "ae.safetensors", BODY)
    root = tmp_path / "models"
    env = {"MODELS": "org/vae:ae.safetensors:vae", "COMFYFLEET_HF_CACHE_DIR": str(cache)}
    args = ["-m", str(manifest), "--root", str(root)]

    before = await asyncio.to_thread(invoke, cli, ["models", "list", "--json", *args], **env)
    assert before.exit_code == 1
    assert [r["state"] for r in json.loads(before.stdout)] == ["missing", "missing"]

    synced = await asyncio.to_thread(invoke, cli, ["models", "sync", *args], **env)
    assert synced.exit_code == 0, synced.output
    assert "downloaded" in synced.output and "linked" in synced.output
    assert (root / "loras/a.safetensors").read_bytes() == BODY
    assert (root / "vae/ae.safetensors").is_symlink()
    assert len(fileserver.gets()) == 1  # the cached one never touched the network

    after = await asyncio.to_thread(invoke, cli, ["models", "list", *args, "--verify"], **env)
    assert after.exit_code == 0 and after.output.count("present") == 2

    (root / "loras/a.safetensors").write_bytes(b"x" * len(BODY))
    corrupt = await asyncio.to_thread(invoke, cli, ["models", "list", "--verify", *args], **env)
    assert corrupt.exit_code == 1 and "corrupt" in corrupt.output


async def test_sync_failure_exits_1(cli, fileserver, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump([{"url": fileserver.url + "/gone.bin", "folder": "vae"}]))
    args = ["models", "sync", "-m", str(manifest), "--root", str(tmp_path)]
    result = await asyncio.to_thread(invoke, cli, args)
    assert result.exit_code == 1 and "HTTP 404" in result.output


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sync_offline_fails_in_one_line_naming_entry_source_and_remedy(cli, tmp_path) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/a.safetensors"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump([{"url": url, "folder": "loras"}]))
    root = tmp_path / "models"
    result = invoke(cli, ["models", "sync", "-m", str(manifest), "--root", str(root)])
    assert result.exit_code == 1
    dest = root / "loras/a.safetensors"
    assert result.output.splitlines() == [
        f"    failed {dest}: {url}: connection to 127.0.0.1:{port} refused; "
        f"check the network and the URL, or put the file at {dest}"
    ]


async def test_sync_with_hf_hub_offline_touches_no_network(fileserver, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh process, as a user runs
    it. The endpoint is our loopback server, so a request made anyway would show up there."""
    fileserver.add_hf("org/model", "m.bin", BODY)
    root = tmp_path / "models"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": fileserver.url,
        "MODELS": "org/model:m.bin:vae",
        "COMFYFLEET_HF_CACHE_DIR": str(tmp_path / "empty-cache"),
        "COMFYFLEET_VOLUME_BASES": "[]",
    }
    code = "from comfyfleet.cli import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "models", "sync", "--root", str(root),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err
    assert out == b""
    assert err.decode().splitlines() == [
        f"    failed {root / 'vae/m.bin'}: hf://org/model/m.bin: not in the host cache, and "
        "HF_HUB_OFFLINE=1 forbids downloading; pre-seed the host cache "
        "(COMFYFLEET_HF_CACHE_DIR) or unset HF_HUB_OFFLINE"
    ]
    assert fileserver.hits == []


def test_list_prints_whole_paths_when_not_on_a_terminal(cli, tmp_path: Path) -> None:
    root = tmp_path / ("a-rather-long-folder-name-" * 4) / "models"
    result = invoke(cli, ["models", "list", "--root", str(root)], MODELS="org/vae:ae.bin:vae")
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"missing  vae          ae.bin  {root / 'vae/ae.bin'}"]
