"""Model-aware placement: what a task needs and a backend has (pure functions), and, through the
gateway's HTTP API with two test servers whose model folders differ, where tasks land.

The test server lists ``models/<folder>/`` as its loaders' combo options, as ComfyUI does, so a
backend "has" a checkpoint once an (empty) file of that name is there. A checkpoint workflow
validates on such a backend and then fails at execution (the test server does not implement
CheckpointLoaderSimple): that error says the task ran where the file was; on a backend without
the file it would fail validation instead ("Value not in list").
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.fleet.placement import (
    Needs,
    files_of,
    met_by_any,
    needs_of,
    placement,
)
from comfyfleet.gateway.app import create_app
from comfyfleet.jobs import JobSpec
from comfyfleet.testing import ComfyTestServer

from .helpers import (
    NOT_IMPLEMENTED,
    FileServer,
    checkpoint_workflow,
    finished,
    make_fleet,
    make_settings,
    payload,
    serve,
    stopped_claiming,
)
from .pools.cases import local_options

A, B = "a.safetensors", "b.safetensors"


# --- the pure part ------------------------------------------------------------------------------


def test_needs_are_the_loader_files_and_the_job_models() -> None:
    graph = {
        "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "style.safetensors"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd/x.ckpt"}},
        "5": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "t5.sft", "clip_name2": ["9", 0]},
        },
        "6": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit.safetensors"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
    }
    models = [
        {"url": "https://cdn.example/m/up%20scale.pth", "folder": "upscale_models"},
        {"url": "https://cdn.example/y", "folder": "unet", "filename": "flux.sft"},
    ]
    needs = needs_of(JobSpec(workflow=graph, models=models))
    assert needs == Needs(
        files=(
            "checkpoints/sd/x.ckpt",
            "clip_vision/vit.safetensors",  # CLIPVisionLoader's clip_name is not a text encoder
            "diffusion_models/flux.sft",  # legacy folder names are canonical
            "loras/style.safetensors",
            "text_encoders/t5.sft",  # a link (clip_name2) names no file
            "upscale_models/up scale.pth",
        ),
        checkpoint="checkpoints/sd/x.ckpt",
    )


def test_a_template_or_a_plain_workflow_needs_nothing_from_the_graph() -> None:
    assert needs_of(JobSpec(template="portrait")) == Needs()
    plain = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    assert needs_of(JobSpec(workflow=plain)) == Needs()


def test_a_backend_has_the_options_of_its_loader_inputs() -> None:
    info = {
        "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [[A, B]]}}},
        "UNETLoader": {"input": {"required": {"unet_name": ["COMBO", {"options": ["flux.sft"]}]}}},
        "CLIPVisionLoader": {"input": {"required": {"clip_name": [["vit.safetensors"]]}}},
        "KSampler": {"input": {"required": {"sampler_name": [["euler"]]}}},
    }
    assert files_of(info) == {
        f"checkpoints/{A}",
        f"checkpoints/{B}",
        "diffusion_models/flux.sft",
        "clip_vision/vit.safetensors",
    }
    assert met_by_any([f"checkpoints/{A}"], [set(), files_of(info)])
    assert not met_by_any([f"checkpoints/{A}", "loras/l.sft"], [files_of(info)])


def test_a_task_no_known_backend_meets_keeps_only_its_warm_key() -> None:
    info = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [[A]]}}}}
    met = placement(JobSpec(workflow=checkpoint_workflow(A)), [info])
    assert met == Needs((f"checkpoints/{A}",), f"checkpoints/{A}")
    unmet = placement(JobSpec(workflow=checkpoint_workflow(B)), [info])
    assert unmet == Needs((), f"checkpoints/{B}")


# --- two backends, different model folders --------------------------------------------------------


async def backends_ready(served: Any, names: list[str]) -> None:
    """Until every named backend is healthy with its object_info cached (event-driven)."""
    fleet = served.gateway.fleet

    def ready(name: str) -> bool:
        agent = fleet.agents[name]
        return agent.backend.healthy and agent.runner.catalogue() is not None

    async with asyncio.timeout(30):
        for name in names:
            while not ready(name):
                await fleet.backend(name).changed(timeout=5)


def give(server: ComfyTestServer, *names: str) -> None:
    folder = Path(server.models_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


@pytest.fixture
async def gateway_for(settings_for) -> AsyncIterator[Any]:
    """``await gateway_for({name: server}, **settings)``: a served gateway, backends ready."""
    made: list[Any] = []

    async def make(servers: dict[str, ComfyTestServer], **kw: Any) -> Any:
        backends = [f"{name}={server.url}" for name, server in servers.items()]
        context = serve(create_app(settings_for(backends, **kw)))
        served = await context.__aenter__()
        made.append(context)
        await backends_ready(served, list(servers))
        return served

    yield make
    for context in reversed(made):
        await context.__aexit__(None, None, None)


async def post(client: Any, spec: JobSpec) -> str:
    body = spec.model_dump(mode="json", exclude_none=True, exclude={"id"})
    resp = await client.post("/api/v1/tasks", json={**body, "max_attempts": 1})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def outcome(served: Any, task_id: str) -> Any:
    task = await served.gateway.queue.wait_finished(task_id, 60)
    assert task.finished, task
    return task


def ran_there(task: Any) -> bool:
    """The checkpoint workflow got past validation: its file was on the backend."""
    return task.error["code"] == "node_execution_error" and NOT_IMPLEMENTED in str(task.error)


async def test_tasks_land_on_the_backend_that_has_their_checkpoint(
    start_servers, gateway_for
) -> None:
    one, two = await start_servers(2)
    give(one, A)
    give(two, B)
    served = await gateway_for({"gpu-a": one, "gpu-b": two})
    async with served.client() as client:
        ids = {}
        for n, name in enumerate([A, B, B, A, A, B, A, B]):
            ids[await post(client, JobSpec(workflow=checkpoint_workflow(name)))] = (n, name)
    for task_id, (_, name) in ids.items():
        task = await outcome(served, task_id)
        assert task.models == [f"checkpoints/{name}"] and task.checkpoint == task.models[0]
        assert task.backend == ("gpu-a" if name == A else "gpu-b"), task
        assert ran_there(task), task.error


async def warm_up(served: Any, client: Any, name: str, backend: str, other: str) -> None:
    """Run one ``name`` task on ``backend`` alone (``other`` drained), so it is warm."""
    fleet = served.gateway.fleet
    fleet.drain(other)
    await stopped_claiming(fleet.backend(other))
    task = await outcome(served, await post(client, JobSpec(workflow=checkpoint_workflow(name))))
    assert task.backend == backend
    fleet.undrain(other)


async def test_each_backend_keeps_the_checkpoint_it_ran_last(start_servers, gateway_for) -> None:
    """Both have both checkpoints. Warmed with A and B, then given a batch in an order that
    FIFO would hand out mixed (A B B A A B), each first runs its own checkpoint's tasks."""
    one, two = await start_servers(2)
    for server in (one, two):
        give(server, A, B)
    served = await gateway_for({"gpu-a": one, "gpu-b": two})
    fleet = served.gateway.fleet
    async with served.client() as client:
        await warm_up(served, client, A, "gpu-a", "gpu-b")
        await warm_up(served, client, B, "gpu-b", "gpu-a")
        for name in fleet.agents:
            fleet.drain(name)
        for name in fleet.agents:
            await stopped_claiming(fleet.backend(name))
        ids = [
            await post(client, JobSpec(workflow=checkpoint_workflow(name)))
            for name in [A, B, B, A, A, B]
        ]
        for name in fleet.agents:
            fleet.undrain(name)
        tasks = [await outcome(served, task_id) for task_id in ids]
    assert all(ran_there(t) for t in tasks)
    ran: dict[str, list[str]] = {}
    for task in sorted(tasks, key=lambda t: t.started_at):
        ran.setdefault(task.backend, []).append(task.checkpoint.split("/")[-1])
    # Each starts on its warm checkpoint and switches at most once: when none of it is left.
    assert ran["gpu-a"][0] == A and ran["gpu-b"][0] == B, ran
    for backend, names in ran.items():
        switches = sum(1 for x, y in itertools.pairwise(names) if x != y)
        assert switches <= 1, (backend, ran)
    assert ran["gpu-a"].count(A) + ran["gpu-b"].count(B) >= 4, ran


async def test_a_model_no_backend_has_is_fetched_by_whoever_claims_it(
    start_servers, gateway_for, tmp_path
) -> None:
    """No starvation: nobody lists the file, so the task is not held for anyone; the backend
    that takes it downloads it (``JobSpec.models``) and runs it."""
    one, two = await start_servers(2)
    shared = tmp_path / "models"
    (shared / "checkpoints").mkdir(parents=True)
    for server in (one, two):  # both read their checkpoints from the gateway's model root
        (Path(server.models_dir) / "checkpoints").symlink_to(shared / "checkpoints")
    async with FileServer().serving() as files:
        body = b"weights" * 100
        url = files.add("/cdn/c.safetensors", body)
        wanted = {"url": url, "folder": "checkpoints", "sha256": hashlib.sha256(body).hexdigest()}
        served = await gateway_for(
            {"gpu-a": one, "gpu-b": two}, model_cache_root=shared, allow_private_urls=True
        )
        spec = JobSpec(workflow=checkpoint_workflow("c.safetensors"), models=[wanted])
        async with served.client() as client:
            task = await outcome(served, await post(client, spec))
    assert task.models is None and task.checkpoint == "checkpoints/c.safetensors"
    assert ran_there(task), task.error
    assert files.gets["/cdn/c.safetensors"] == 1


# --- the autoscaler: the pool that holds the files scales -----------------------------------------


def pool_with(name: str, checkpoint: str, **keys: Any) -> dict[str, Any]:
    """A local pool whose workers (test servers, 1 s per job) have ``checkpoint``."""
    prelude = (
        f"mkdir -p {{root}}/models/checkpoints && : > {{root}}/models/checkpoints/{checkpoint}"
    )
    server = local_options(1.0)["command"]
    command = f"sh -c '{prelude} && exec {server}'"
    return {"name": name, "provider": "local", **local_options(), "command": command, **keys}


async def test_the_pool_whose_workers_have_the_files_scales_for_them(
    tmp_path: Path, sqlite_queue: Any
) -> None:
    """Pool ``pa`` comes first (it would take all demand before), but the waiting tasks are
    placed on B, which only ``pb``'s workers list: ``pb`` grows to its max, ``pa`` stays at 0."""
    pools = [pool_with("pa", A, min=0, max=1), pool_with("pb", B, min=1, max=2, cooldown=30)]
    settings = make_settings(tmp_path, [], pools=pools)
    async with make_fleet(settings, sqlite_queue) as fleet:
        manager = fleet.workers

        await catalogue_known(fleet, manager.pools["pb"])
        tasks = await submit_tasks(sqlite_queue, 4, models=[f"checkpoints/{B}"])
        pa, pb = manager.pools["pa"], manager.pools["pb"]
        await manager.until(lambda _: len(pb.active()) == 2 or pa.started_total > 0, 60)
        assert pa.started_total == 0, manager.workers()
        done = await finished(sqlite_queue, [t.id for t in tasks], 120)
        assert f"checkpoints/{B}" in manager.pool_files["pb"]
        assert f"checkpoints/{A}" not in manager.pool_files["pb"]
        assert pa.started_total == 0, manager.workers()
    assert {t.status for t in done} == {"succeeded"}
    assert all(t.backend.startswith("pb/") for t in done), [t.backend for t in done]


async def catalogue_known(fleet: Any, pool: Any) -> None:
    """Until a worker of ``pool`` is a backend whose object_info is cached (event-driven: the
    manager's changes until its backend exists, then the backend's own)."""
    manager = fleet.workers

    def agents() -> list[Any]:
        names = [w.backend_name for w in pool.workers.values()]
        return [fleet.agents[n] for n in names if n in fleet.agents]

    async with asyncio.timeout(60):
        await manager.until(lambda _: bool(agents()), 60)
        while not any(a.runner.catalogue() is not None for a in agents()):
            await agents()[0].backend.changed(timeout=5)


async def submit_tasks(queue: Any, n: int, *, models: list[str]) -> list[Any]:
    """n counted tasks stored with this placement (what the gateway's intake would store for a
    workflow loading those files while a backend lists them)."""
    out = []
    for _ in range(n):
        prefix = f"t{uuid.uuid4().hex[:12]}"
        task, _ = await queue.submit(payload(prefix), task_id=prefix, models=models)
        out.append(task)
    return out
