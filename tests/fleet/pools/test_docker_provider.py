"""The Docker provider against the real daemon: model volumes read-only, GPU device requests,
and a pool of containers running tasks from zero and back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyfleet.fleet.pools import WorkerStartError, parse_pool
from comfyfleet.fleet.pools.provider import make_provider
from comfyfleet.queue import Queue

from ..helpers import finished, make_fleet, make_settings, submit
from .cases import worker_spec
from .conftest import docker_client
from .docker_image import build_image, mounts, server_command


@pytest.fixture
def image() -> Iterator[str]:
    client = docker_client()
    yield build_image(client)
    client.close()


def docker_pool(image: str, tmp_path: Path, **options: Any):  # type: ignore[no-untyped-def]
    entry = {"name": "dk", "provider": "docker", "max": 2, "image": image,
             "command": server_command(), "volumes": mounts(), **options}  # fmt: skip
    owner = f"dtest{uuid.uuid4().hex[:8]}"  # concurrent runs never meet
    return make_provider(parse_pool(entry), owner=owner, data_dir=tmp_path)


async def test_model_volumes_are_mounted_read_only(image: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "sd15.safetensors").write_bytes(b"weights")
    volumes = [*json.loads(mounts()), f"{models}:/data/models"]  # no mode: read-only
    provider = docker_pool(image, tmp_path, volumes=json.dumps(volumes))
    handle = await provider.start(worker_spec(provider, "w0-vol"))
    try:
        url = await provider.wait_healthy(handle, timeout=60)
        async with httpx.AsyncClient(trust_env=False) as http:
            info = (await http.get(f"{url}/object_info/CheckpointLoaderSimple")).json()
        names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert "sd15.safetensors" in names
        container = docker_client().containers.get(handle.ref)
        [mount] = [m for m in container.attrs["Mounts"] if m["Destination"] == "/data/models"]
        assert mount["RW"] is False
        assert container.labels["comfyfleet.pool"] == "dk"
    finally:
        await provider.stop(handle)


async def test_gpus_are_requested_from_the_daemon(image: str, tmp_path: Path) -> None:
    provider = docker_pool(image, tmp_path, gpus="all")
    client = docker_client()
    try:
        handle = await provider.start(worker_spec(provider, "w0-gpu"))
    except WorkerStartError as exc:  # no NVIDIA runtime on this host: the daemon says so
        assert "device driver" in exc.message or "gpu" in exc.message.lower()
        name = f"comfyfleet-{provider.owner}-dk-w0-gpu"
        assert client.containers.list(all=True, filters={"name": name}) == []
        return
    try:  # a GPU host: the request is on the container
        requests = client.containers.get(handle.ref).attrs["HostConfig"]["DeviceRequests"]
        assert requests[0]["Count"] == -1 and requests[0]["Capabilities"] == [["gpu"]]
    finally:
        await provider.stop(handle)


async def test_a_pool_of_containers_runs_a_burst_from_zero_and_back(
    image: str, tmp_path: Path, sqlite_queue: Queue
) -> None:
    entry = {"name": "dk", "provider": "docker", "min": 0, "max": 2, "cooldown": 0.3,
             "image": image, "command": server_command(), "volumes": mounts()}  # fmt: skip
    settings = make_settings(tmp_path, [], pools=[entry])
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = fleet.workers
        tasks = await submit(sqlite_queue, 6)
        done = await finished(sqlite_queue, [t.id for t in tasks], 120)
        assert {t.status for t in done} == {"succeeded"}
        assert all((t.backend or "").startswith("dk/") for t in done)
        await manager.until(lambda m: not m.pools["dk"].workers, 60)
        assert manager.pools["dk"].started_total >= 1
    leftover = docker_client().containers.list(all=True, filters={"label": "comfyfleet.pool=dk"})
    assert [c.name for c in leftover if "comfyfleet-comfyfleet-dk" in c.name] == []


def test_serve_refuses_a_docker_pool_whose_image_is_missing(tmp_path: Path) -> None:
    from comfyfleet.fleet.pools import PoolSpecError
    from comfyfleet.gateway.launch import build_settings

    docker_client()  # a daemon that answers, so the refusal is about the image
    missing = f"comfyfleet-test:missing-{tmp_path.name[-6:]}"
    with pytest.raises(PoolSpecError) as info:
        build_settings(data_dir=tmp_path, pools=[f"dk=docker:max=1,image={missing}"])
    assert info.value.message == (
        f"pool 'dk' (docker): image '{missing}' is not on the Docker host "
        "(docker pull, build or import it)"
    )
