"""Model files a task asks for (``JobSpec.models``) on the gateway's agents: a local agent and
a ``comfyfleet agent`` process put them under their model root before the prompt is checked.

The test server lists ``models/<folder>/`` in its loaders' combo lists, as ComfyUI does. Its
``models/`` folder is the agent's model root here, so a workflow naming a checkpoint validates
only once the file was fetched there; it then reaches execution, where the test server reports
CheckpointLoaderSimple as not implemented. That error, instead of "Value not in list", is the
proof that the file arrived in time.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.gateway.app import create_app
from comfyfleet.jobs import JobSpec
from comfyfleet.queue import Queue, Task

from .helpers import (
    NOT_IMPLEMENTED,
    FileServer,
    checkpoint_workflow,
    executions,
    final,
    finished,
    make_fleet,
    serve,
    submit,
)

NO_ROOT = (
    "this job asks for model files but the {who} has no model root: set "
    "COMFYFLEET_MODEL_CACHE_ROOT, COMFYUI_DIR or COMFYFLEET_MODEL_ROOTS"
)


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with FileServer().serving() as server:
        yield server


def checkpoint(files: FileServer, name: str, body: bytes) -> dict[str, Any]:
    url = files.add(f"/cdn/{name}", body)
    digest = hashlib.sha256(body).hexdigest()
    return {"url": url, "folder": "checkpoints", "sha256": digest, "size": len(body)}


async def run(queue: Queue, spec: JobSpec) -> Task:
    task, _ = await queue.submit({"spec": spec.model_dump(mode="json", exclude_none=True)})
    [done] = await finished(queue, [task.id])
    return done


async def test_a_local_agent_fetches_the_models_before_the_prompt_is_checked(
    sqlite_queue, start_servers, settings_for, files
) -> None:
    [comfy] = await start_servers(1)
    settings = settings_for(
        [f"gpu={comfy.url}"],
        model_cache_root=comfy.models_dir,
        allow_private_urls=True,  # the file server is on 127.0.0.1
    )
    name = "fetched-v1.safetensors"
    body = b"weights" * 1000
    wanted = checkpoint(files, name, body)
    async with make_fleet(settings, sqlite_queue):
        # Without the file: our validation (object_info, now cached by the agent) refuses it.
        without = await run(sqlite_queue, JobSpec(workflow=checkpoint_workflow(name)))
        fetched = await run(
            sqlite_queue, JobSpec(workflow=checkpoint_workflow(name), models=[wanted])
        )
        again = await run(
            sqlite_queue, JobSpec(workflow=checkpoint_workflow(name), models=[wanted])
        )
    assert without.status == "failed" and without.error["code"] == "workflow_invalid"
    assert f"Value not in list: ckpt_name: '{name}'" in without.error["message"]
    # With it: fetched into the root, object_info fetched again, the prompt reached execution.
    assert fetched.status == "failed" and fetched.attempts == 1, fetched.error
    assert fetched.error["code"] == "node_execution_error", fetched.error
    assert "node 4 (CheckpointLoaderSimple)" in fetched.error["message"]
    assert NOT_IMPLEMENTED in fetched.error["message"]
    assert (comfy.models_dir / "checkpoints" / name).read_bytes() == body
    assert again.error["code"] == "node_execution_error"
    assert files.gets[f"/cdn/{name}"] == 1  # cached: the second task downloaded nothing


async def test_models_on_an_agent_without_a_model_root_fail_at_once(
    sqlite_queue, start_servers, settings_for, files
) -> None:
    [comfy] = await start_servers(1)
    settings = settings_for(
        [f"gpu={comfy.url}"],
        model_cache_root=None,
        model_roots=[],
        volume_bases=[],
        comfy_dir=None,
        allow_private_urls=True,
    )
    wanted = checkpoint(files, "nowhere.safetensors", b"w" * 64)
    async with make_fleet(settings, sqlite_queue):
        spec = JobSpec(workflow=checkpoint_workflow("nowhere.safetensors"), models=[wanted])
        done = await run(sqlite_queue, spec)
        [plain] = await submit(sqlite_queue, 1)  # tasks asking for no files still run
        [plain] = await finished(sqlite_queue, [plain.id])
    assert done.status == "failed" and done.attempts == 1
    assert done.error == {
        "code": "model_error",
        "message": NO_ROOT.format(who="gateway"),
        "backend": "gpu",
    }
    assert files.gets == {}
    assert plain.status == "succeeded"
    assert executions([comfy.output_dir], plain.id) == 1


# --- the remote agent (``comfyfleet agent``) ------------------------------------------------

SUBMIT, AGENT = "sub-token", "agent-token"
# Where an agent could find a model root; none of them reaches the agent unless a test sets it.
ROOT_VARIABLES = (
    "COMFYFLEET_MODEL_CACHE_ROOT",
    "COMFYFLEET_MODEL_ROOTS",
    "COMFYFLEET_COMFY_DIR",
    "COMFYUI_DIR",
    "COMFYFLEET_VOLUME_BASES",
)


@pytest.fixture
async def gateway(settings_for) -> AsyncIterator[Any]:
    """A gateway with no local backends: only the remote agent executes."""
    # The file server is on 127.0.0.1: the gateway must accept loopback model URLs at submit.
    settings = settings_for(
        [], api_keys=[f"{SUBMIT}:submit", f"{AGENT}:agent"], allow_private_urls=True
    )
    async with serve(create_app(settings)) as served:
        yield served


@pytest.fixture
def agent(tmp_path: Path, gateway) -> Any:
    """``agent(comfy_url, **env)`` starts one ``comfyfleet agent`` process."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(comfy_url: str, **env: str) -> None:
        log = (tmp_path / f"agent-{len(procs)}.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            "comfyfleet.cli",
            "agent",
            "--gateway",
            gateway.url,
            "--comfy",
            comfy_url,
            "--token",
            AGENT,
            "--name",
            "remote",
            "--wait",
            "5",
        ]
        inherited = {k: v for k, v in os.environ.items() if k not in ROOT_VARIABLES}
        full_env = {**inherited, "COMFYFLEET_VOLUME_BASES": "[]", **env}
        procs.append(subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def post(gateway: Any, spec: JobSpec) -> dict[str, Any]:
    async with gateway.client(SUBMIT) as client:
        body = spec.model_dump(mode="json", exclude_none=True, exclude={"id"})
        resp = await client.post("/api/v1/tasks", json=body)
        resp.raise_for_status()
        return await final(client, str(resp.json()["id"]))


async def test_a_remote_agent_fetches_the_models_under_its_own_root(
    gateway, agent, start_servers, files
) -> None:
    [comfy] = await start_servers(1)
    agent(
        comfy.url,
        COMFYFLEET_MODEL_CACHE_ROOT=str(comfy.models_dir),
        COMFYFLEET_ALLOW_PRIVATE_URLS="true",
    )
    name = "remote-v1.safetensors"
    wanted = checkpoint(files, name, b"remote weights")
    task = await post(gateway, JobSpec(workflow=checkpoint_workflow(name), models=[wanted]))
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "node_execution_error", task["error"]
    assert NOT_IMPLEMENTED in task["error"]["message"]
    assert (comfy.models_dir / "checkpoints" / name).read_bytes() == b"remote weights"


async def test_a_remote_agent_without_a_model_root_fails_the_task_at_once(
    gateway, agent, start_servers, files
) -> None:
    [comfy] = await start_servers(1)
    agent(comfy.url)
    wanted = checkpoint(files, "x.safetensors", b"x")
    task = await post(
        gateway, JobSpec(workflow=checkpoint_workflow("x.safetensors"), models=[wanted])
    )
    assert task["status"] == "failed" and task["attempts"] == 1, task
    assert task["error"]["code"] == "model_error"
    assert task["error"]["message"] == NO_ROOT.format(who="agent")
    assert files.gets == {}
