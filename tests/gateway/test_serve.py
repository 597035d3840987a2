"""``comfyfleet serve``: settings from flags, file and environment; zero-config start with no
ComfyUI running; ``--demo``; the banner."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.launch import ConfigFileError, banner, build_settings
from comfyfleet.gateway.state import DEMO_LABEL

from .gateway_helpers import WORKFLOW, serve


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_zero_config_feeds_the_default_comfyui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYFLEET_BACKENDS", raising=False)
    settings = build_settings()
    assert settings.backends == ["http://127.0.0.1:8188"]
    assert settings.database_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)


def test_flags_beat_the_file_which_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYFLEET_PORT", "9001")
    monkeypatch.setenv("COMFYFLEET_JOB_TIMEOUT", "77")
    config = tmp_path / "gateway.yaml"
    config.write_text("port: 9002\nbackends: [http://gpu-a:8188]\nmax_attempts: 5\n")
    settings = build_settings(config=config, comfy=["b=http://gpu-b:8188"], database=None)
    assert settings.port == 9002
    assert settings.job_timeout == 77
    assert settings.max_attempts == 5
    assert settings.backends == ["b=http://gpu-b:8188"]
    assert build_settings(config=config, port=9003).port == 9003


def test_toml_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('database_url = "postgresql://db/fleet"\napi_keys = ["t:admin"]\n')
    settings = build_settings(config=config)
    assert settings.database_url == "postgresql://db/fleet"
    assert settings.api_keys == ["t:admin"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot: 1\n", "unknown settings prot"),
        ("- a\n- b\n", "must hold a mapping"),
        ("port: [\n", "does not parse"),
        ("port: many\n", "invalid settings"),
    ],
)
def test_bad_config_files_are_explained(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        build_settings(config=config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        build_settings(config=tmp_path / "nope.yaml")


async def test_starts_without_its_comfyui_and_reports_it_unhealthy(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(backends=[f"gpu-1={closed_port_url()}"])
    async with serve(create_app(settings)) as served, served.client() as http:
        ready = await http.get("/readyz")
        required = await http.get("/readyz", params={"backend": "required"})
        submitted = await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})
        metrics = (await http.get("/api/v1/metrics")).json()
        text = banner(served.gateway, "127.0.0.1", 8080)
    assert ready.status_code == 200
    assert ready.json()["backends"]["items"][0]["name"] == "gpu-1"
    assert ready.json()["backends"]["healthy"] == 0
    assert required.status_code == 503
    assert submitted.status_code == 201  # the queue takes work while backends are down
    assert metrics["workers"]["total_workers"] == 1
    assert metrics["workers"]["idle_workers"] == 0
    assert "gpu-1" in text and "SQLite" in text and "loopback only" in text


async def test_demo_mode_runs_tasks_on_the_labelled_test_server(
    make_settings: Callable[..., Settings],
) -> None:
    async with serve(create_app(make_settings(), demo=True)) as served, served.client() as http:
        ready = (await http.get("/readyz")).json()
        graph = {
            **WORKFLOW,
            "1": {**WORKFLOW["1"], "inputs": {**WORKFLOW["1"]["inputs"], "color": 128}},
        }
        done = await http.post("/api/v1/tasks?wait=60", json={"workflow": graph})
        metrics = (await http.get("/metrics")).text
        page = (await http.get("/")).text
        text = banner(served.gateway, "127.0.0.1", 8080)
    assert ready["demo"] == DEMO_LABEL
    assert ready["backends"]["items"][0]["label"] == DEMO_LABEL
    assert done.json()["status"] == "succeeded", json.dumps(done.json())
    assert done.json()["backend"] == DEMO_LABEL
    assert f'label="{DEMO_LABEL}"' in metrics
    assert DEMO_LABEL in text
    assert 'id="demo"' in page  # the dashboard shows the label from /readyz
