"""The RunPod executor against the runpod SDK's own local API server running our worker
(``comfyfleet worker --local``) in front of a test server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from comfyfleet.fleet.runpod import RunPodRunner, error_from_status
from comfyfleet.jobs import JobSpec
from comfyfleet.testing import ComfyTestServer

from .helpers import (
    NOT_IMPLEMENTED,
    FileServer,
    checkpoint_workflow,
    executions,
    finished,
    free_port,
    make_fleet,
    submit,
)


def _wait_listening(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker's API answers (it is a child process: readiness, not a race)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
        try:
            httpx.get(url + "/docs", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(log.read_text()[-3000:])


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyTestServer]:
    root = tmp_path_factory.mktemp("comfy")
    with ComfyTestServer(root=root, cache="none").run_in_thread() as srv:
        yield srv


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, comfy) -> Iterator[str]:
    """``comfyfleet worker --local --port N`` feeding the test server: a RunPod endpoint (one
    per module: the worker takes seconds to import)."""
    tmp_path = tmp_path_factory.mktemp("worker")
    port = free_port()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "COMFYFLEET_COMFY_URL": comfy.url,
        "COMFYFLEET_DATA_DIR": str(tmp_path / "worker-data"),
        "COMFYFLEET_MODEL_CACHE_ROOT": str(comfy.models_dir),  # JobSpec.models land there
        "COMFYFLEET_ALLOW_PRIVATE_URLS": "true",  # the tests' file server is on 127.0.0.1
        "RUNPOD_WEBHOOK_POST_OUTPUT": "",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "comfyfleet.cli", "worker", "--local", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_task_runs_on_the_runpod_endpoint(sqlite_queue, settings_for, comfy, endpoint):
    settings = settings_for([], runpod_endpoint=endpoint, runpod_concurrency=2)
    async with make_fleet(settings, sqlite_queue) as fleet:
        tasks = await submit(sqlite_queue, 3)
        done = await finished(sqlite_queue, [t.id for t in tasks])
        [backend] = fleet.backends()
    assert [t.status for t in done] == ["succeeded"] * 3
    assert backend["kind"] == "runpod" and backend["executed"] == 3
    assert [executions([comfy.output_dir], t.id) for t in done] == [1, 1, 1]
    artifact = done[0].result["artifacts"][0]
    # The worker answered base64; the executor moved the bytes into the artifact store.
    assert artifact.get("data") is None
    stored = settings.data_dir / "artifacts" / done[0].id
    assert [p.read_bytes()[:4] for p in stored.iterdir()] == [b"\x89PNG"]


async def test_node_error_on_the_endpoint_fails_the_task(
    sqlite_queue, settings_for, comfy, endpoint
):
    settings = settings_for([], runpod_endpoint=endpoint, runpod_sync=True)
    async with make_fleet(settings, sqlite_queue):
        [task] = await submit(sqlite_queue, 1, fail=True)
        [done] = await finished(sqlite_queue, [task.id])
    assert done.status == "failed" and done.attempts == 1
    assert "boom on purpose" in done.error["message"]


async def test_the_models_a_task_asks_for_travel_to_the_worker(
    sqlite_queue, settings_for, comfy, endpoint
):
    """The executor forwards ``models`` in the JobSpec: the worker fetches the checkpoint into
    the test server's models/ before the prompt is checked, so it fails at execution (the test
    server does not implement CheckpointLoaderSimple), not with "Value not in list"."""
    name = "runpod-v1.safetensors"
    settings = settings_for([], runpod_endpoint=endpoint, runpod_sync=True)
    async with FileServer().serving() as files, make_fleet(settings, sqlite_queue):
        wanted = {"url": files.add(f"/cdn/{name}", b"weights"), "folder": "checkpoints"}
        spec = JobSpec(workflow=checkpoint_workflow(name), models=[wanted])
        task, _ = await sqlite_queue.submit({"spec": spec.model_dump(mode="json")})
        [done] = await finished(sqlite_queue, [task.id])
    assert done.status == "failed" and done.attempts == 1, done.error
    assert NOT_IMPLEMENTED in done.error["message"], done.error
    assert (comfy.models_dir / "checkpoints" / name).read_bytes() == b"weights"


async def test_unreachable_endpoint_is_unhealthy(sqlite_queue, settings_for):
    settings = settings_for([], runpod_endpoint=f"http://127.0.0.1:{free_port()}")
    runner = RunPodRunner(settings.runpod_endpoint, lambda _: None)
    try:
        with pytest.raises(Exception, match="unreachable"):
            await runner.health()
    finally:
        await runner.close()


def test_status_errors_map_to_our_errors() -> None:
    timeout = error_from_status({"id": "j", "status": "TIMED_OUT"})
    assert timeout.code == "timeout" and not timeout.retryable
    coded = error_from_status(
        {
            "id": "j",
            "status": "FAILED",
            "error": "ComfyUI is unavailable",
            "output": {"code": "comfy_unavailable", "retryable": True, "path": "/prompt"},
        }
    )
    assert coded.code == "comfy_unavailable" and coded.retryable
    assert coded.details["path"] == "/prompt"
    invalid = error_from_status(
        {
            "id": "j",
            "status": "FAILED",
            "error": "workflow is invalid",
            "output": {"code": "workflow_invalid", "node_errors": [{"node_id": "1"}]},
        }
    )
    assert invalid.code == "workflow_invalid" and invalid.status == 422
    crash = error_from_status(
        {
            "id": "j",
            "status": "FAILED",
            "error": '{"error_type": "<class \'KeyError\'>", "error_message": "x"}',
        }
    )
    assert crash.retryable
