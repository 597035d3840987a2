"""The RunPod provider against the stand-in of RunPod's API: what the SDK sends, failures on
purpose, and a pool that rides over a refused deploy."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.config import Settings
from comfyfleet.fleet.pools import PoolSpecError, WorkerManager, WorkerStartError, parse_pool
from comfyfleet.fleet.pools.provider import make_provider
from comfyfleet.queue import Queue

from ..helpers import finished, make_fleet, make_settings, submit
from .cases import worker_spec
from .runpod_standin import RunPodStandIn


def provider_for(standin: RunPodStandIn, tmp_path: Path, **options: str):  # type: ignore[no-untyped-def]
    pool = parse_pool({"name": "gpu", "provider": "runpod", "max": 2, **options})
    settings = Settings(runpod_api_key=standin.api_key, data_dir=tmp_path)
    return make_provider(pool, owner="t", data_dir=tmp_path, settings=settings)


async def test_a_gpu_pod_is_deployed_with_image_gpu_env_and_the_key(
    runpod_standin: RunPodStandIn, tmp_path: Path
) -> None:
    provider = provider_for(
        runpod_standin,
        tmp_path,
        image="ghcr.io/me/comfy:1",
        gpu="NVIDIA GeForce RTX 4090",
        gpu_count="2",
        env='{"HF_TOKEN": "x"}',
    )
    handle = await provider.start(worker_spec(provider, "w0-abc"))
    await provider.wait_healthy(handle, timeout=60)
    assert runpod_standin.ops()[:2] == ["gpuTypes", "podFindAndDeployOnDemand"]
    deploy = runpod_standin.calls[1]
    assert deploy["auth"] == f"Bearer {runpod_standin.api_key}"
    for part in (
        'name: "comfyfleet-t-gpu-w0-abc"',
        'imageName: "ghcr.io/me/comfy:1"',
        'gpuTypeId: "NVIDIA GeForce RTX 4090"',
        "gpuCount: 2",
        '{ key: "HF_TOKEN", value: "x" }',
        '{ key: "COMFYFLEET_POOL", value: "gpu" }',
    ):
        assert part in deploy["query"]
    await provider.stop(handle)
    assert runpod_standin.ops()[-1] == "podTerminate"
    assert [p.terminated for p in runpod_standin.pods.values()] == [True]


async def test_a_refused_deploy_and_an_unknown_gpu_are_start_errors(
    runpod_standin: RunPodStandIn, tmp_path: Path
) -> None:
    provider = provider_for(runpod_standin, tmp_path, image="img")
    runpod_standin.fail["deployCpuPod"] = 1
    with pytest.raises(WorkerStartError, match="deployCpuPod failed on purpose"):
        await provider.start(worker_spec(provider, "w0-x"))
    odd = provider_for(runpod_standin, tmp_path, image="img", gpu="NVIDIA H9000")
    with pytest.raises(WorkerStartError, match="No GPU found"):
        await odd.start(worker_spec(odd, "w0-y"))
    assert runpod_standin.pods == {}


def test_a_runpod_pool_without_an_api_key_fails_at_start(tmp_path: Path) -> None:
    pool = parse_pool("gpu=runpod:max=1,image=img")
    provider = make_provider(pool, data_dir=tmp_path, settings=Settings(runpod_api_key=None))
    with pytest.raises(PoolSpecError, match="COMFYFLEET_RUNPOD_API_KEY"):
        provider.validate()


async def test_a_pool_of_pods_rides_over_a_refused_deploy_and_runs_tasks(
    runpod_standin: RunPodStandIn, tmp_path: Path, sqlite_queue: Queue
) -> None:
    entry = {"name": "gpu", "provider": "runpod", "min": 0, "max": 1, "image": "img",
             "cooldown": 0.2}  # fmt: skip
    settings = make_settings(tmp_path, [], pools=[entry], runpod_api_key=runpod_standin.api_key)
    runpod_standin.fail["deployCpuPod"] = 1
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager: WorkerManager = fleet.workers
        tasks = await submit(sqlite_queue, 3)
        done = await finished(sqlite_queue, [t.id for t in tasks], 90)
        assert {t.status for t in done} == {"succeeded"}
        pool = manager.pools["gpu"]
        first = pool.finished[0].view()
        assert first["state"] == "failed" and "failed on purpose" in first["reason"]
        await manager.until(lambda m: not m.pools["gpu"].workers, 30)
    assert runpod_standin.ops().count("deployCpuPod") == 2
    assert runpod_standin.ops().count("podTerminate") == 1
    assert all(p.terminated for p in runpod_standin.pods.values())
