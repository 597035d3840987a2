"""Fixtures for the worker's tests: moto's S3 server as a separate process, the SwarmUI
stand-in, the progress receiver, a fake COMFYUI_DIR (helpers in ``worker_helpers``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .worker_helpers import (
    VENV_BIN,
    ProgressReceiver,
    SwarmStandIn,
    free_port,
    make_fake_comfy_dir,
    stop,
    wait_http,
)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server as a separate process on a free port."""
    port = free_port()
    exe = shutil.which("moto_server", path=str(VENV_BIN)) or "moto_server"
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, 60, proc)
        yield url
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):
    from comfyfleet.config import Settings
    from comfyfleet.outputs.s3 import make_client

    settings = Settings(
        bucket_endpoint_url=s3_endpoint,
        bucket_access_key_id="testing",
        bucket_secret_access_key="testing",
    )
    return make_client(settings)


@pytest.fixture
def bucket(s3_client, request: pytest.FixtureRequest) -> str:
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def swarm() -> Iterator[SwarmStandIn]:
    standin = SwarmStandIn()
    yield standin
    standin.server.close()


@pytest.fixture(scope="session")
def progress_receiver() -> Iterator[ProgressReceiver]:
    receiver = ProgressReceiver()
    yield receiver
    receiver.server.close()


@pytest.fixture
def fake_comfy_dir(tmp_path: Path) -> Path:
    return make_fake_comfy_dir(tmp_path)
