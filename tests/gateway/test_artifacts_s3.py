"""With a bucket configured, artifacts go to S3 (moto's server here) and the gateway's stable
artifact URL redirects there (to a presigned URL: the bucket is private)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from comfyfleet.config import Settings
from comfyfleet.fleet.local import QueueSource
from comfyfleet.gateway.app import create_app
from comfyfleet.jobs import Artifact, JobResult
from comfyfleet.outputs.s3 import make_client

from .gateway_helpers import WORKFLOW, Served, serve

BUCKET = "gateway-artifacts"
KEYS = {"bucket_access_key_id": "testing", "bucket_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server in its own process on a port it picks itself."""
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "NO_PROXY": "127.0.0.1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", "0"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        url = _announced_url(proc, log)
        client = make_client(Settings(bucket_endpoint_url=url, **KEYS))
        client.create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def _announced_url(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> str:
    """The URL moto prints once it listens: polled from its log, bounded, failing early if the
    process exits."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if "Running on http://127.0.0.1:" in line:
                return line.split("Running on ", 1)[1].split()[0].rstrip("/")
        time.sleep(0.05)
    raise RuntimeError(f"moto_server did not start: {log.read_text(errors='replace')[-500:]}")


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], s3_endpoint: str
) -> AsyncIterator[Served]:
    settings = make_settings(
        bucket_endpoint_url=s3_endpoint, bucket_name=BUCKET, bucket_presign_seconds=600, **KEYS
    )
    async with serve(create_app(settings)) as served:
        yield served


async def one_chunk() -> AsyncIterator[bytes]:
    yield b"\x89PNG-in-s3"


async def test_artifacts_go_to_s3_and_the_gateway_url_redirects(gateway: Served) -> None:
    gw = gateway.gateway
    source = QueueSource(gw.queue, owner="a", backend="box", lease_seconds=30, job_timeout=60)
    async with gateway.client() as http:
        task_id = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
        lease = await source.claim(wait=5)
        assert lease is not None
        stored = await gw.artifacts.sink(task_id).store(
            Artifact(node_id="9", filename="out.png", media_type="image/png"), one_chunk()
        )
        assert stored.url.startswith(
            f"{gw.settings.bucket_endpoint_url}/{BUCKET}/{task_id}/out.png?"
        )
        await source.complete(lease, JobResult(job_id=task_id, artifacts=[stored]).model_dump())
        response = await http.get(f"/api/v1/tasks/{task_id}/artifacts/out.png")
        assert response.status_code == 307
        location = response.headers["location"]
        assert location.split("?")[0] == stored.url.split("?")[0]
        async with httpx.AsyncClient() as plain:
            fetched = await asyncio.wait_for(plain.get(location), 30)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == b"\x89PNG-in-s3"
