"""The SDK's targets as real processes and servers: the gateway (uvicorn on a free port), the
worker behind the runpod SDK's local API server, and the ComfyUI test server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.testing import ComfyTestServer
from worker.worker_helpers import WorkerProcess

from .client_helpers import write_templates


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_templates(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="module")
def comfy_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyTestServer]:
    """The test server in its own process (shared by the module)."""
    server = ComfyTestServer.start_subprocess(root=tmp_path_factory.mktemp("comfy"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, comfy_process: ComfyTestServer, templates: Path
) -> Iterator[WorkerProcess]:
    """``comfyfleet worker --local`` (the runpod SDK's local API) on the module's test server,
    with the templates and no free memory/disk thresholds."""
    env = {
        "COMFYUI_URL": comfy_process.url,
        "COMFYFLEET_TEMPLATES_DIR": str(templates),
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
    }
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


@pytest.fixture
def make_gateway_settings(tmp_path: Path):
    """Settings for a test gateway on SQLite; keyword arguments override fields."""
    from comfyfleet.config import Settings

    def make(**overrides: object) -> Settings:
        values: dict = {
            "host": "127.0.0.1",
            "data_dir": tmp_path / "gw",
            "backends": [],
            "api_keys": [],
            "webhook_secret": "test-secret",
            **overrides,
        }
        return Settings(**values)

    return make
