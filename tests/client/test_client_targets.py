"""The SDK against real targets: errors arrive as our classes with the server's message (node
id, input name), cancel, idempotent retries of a submit whose answer was lost, and a RunPod
cloud stand-in (the one thing that cannot run here) in front of the real worker."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from comfyfleet import AsyncClient
from comfyfleet.errors import (
    AuthError,
    JobInterrupted,
    ServiceUnavailable,
    WorkflowValidationError,
)
from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer
from gateway.gateway_helpers import Served, catalogue_known, serve
from worker.worker_helpers import WorkerProcess

from .client_helpers import png

BAD = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}
SLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {
        "class_type": "FleetTestSlow",
        "inputs": {"image": ["1", 0], "steps": 200, "seconds_per_step": 0.05},
    },
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "slow"}},
}
SOLID = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x00FF00},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "solid"}},
}


@pytest.fixture
async def gateway(make_gateway_settings, comfy_process: ComfyTestServer) -> AsyncIterator[Served]:
    settings = make_gateway_settings(backends=[f"comfy={comfy_process.url}"])
    async with serve(create_app(settings)) as served:
        await catalogue_known(served)
        yield served


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve an aiohttp app (a proxy, a stand-in) on a free loopback port: its runner and URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


# --- errors ----------------------------------------------------------------------------------
def assert_names_node_and_input(error: WorkflowValidationError) -> None:
    assert "node 1 (EmptyImage) input 'width'" in error.message, error.message


async def test_gateway_refusal_keeps_node_errors(gateway: Served) -> None:
    async with AsyncClient(gateway.url, kind="gateway") as client:
        with pytest.raises(WorkflowValidationError) as caught:
            await client.submit(BAD)
    assert_names_node_and_input(caught.value)
    (entry,) = caught.value.node_errors
    assert (entry["node_id"], entry["input_name"]) == ("1", "width")


async def test_worker_failure_is_a_workflow_error_with_its_message(worker: WorkerProcess) -> None:
    async with AsyncClient(worker.url) as client:
        job = await client.submit(BAD)
        with pytest.raises(WorkflowValidationError) as caught:
            await job.wait()
        assert client.kind == "worker"
    assert_names_node_and_input(caught.value)
    failed = await job.wait(check=False)
    assert failed.status == "failed" and failed.error is caught.value


async def test_comfy_direct_refusal(comfy_process: ComfyTestServer) -> None:
    async with AsyncClient(comfy_process.url) as client:
        job = await client.submit(BAD)
        with pytest.raises(WorkflowValidationError) as caught:
            await job.wait()
    assert_names_node_and_input(caught.value)


async def test_bad_arguments_fail_before_sending(tmp_path: Path) -> None:
    from comfyfleet.errors import InvalidRequest

    async with AsyncClient("http://127.0.0.1:9", kind="gateway") as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.submit(SOLID, images=[png((1, 2, 3)), tmp_path / "missing.png"])
    assert caught.value.details["field"] == "images[1]"


async def test_unreachable_gateway_is_service_unavailable() -> None:
    async with AsyncClient("http://127.0.0.1:9", kind="gateway") as client:
        target = await client.target()
        target.http.backoff = 0.01  # type: ignore[attr-defined]
        with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:9"):
            await client.submit(SOLID)


# --- cancel, progress ------------------------------------------------------------------------
async def test_gateway_cancel_running_job(gateway: Served) -> None:
    async with AsyncClient(gateway.url) as client:
        job = await client.submit(SLOW)
        async for event in job.progress():
            if event.node == "2":  # running on the backend now
                break
        await job.cancel()
        with pytest.raises(JobInterrupted):
            await job.wait(timeout=30)
        result = await job.wait(check=False)
    assert result.status == "cancelled"
    assert (await gateway.gateway.queue.get(job.id)).status == "cancelled"


async def test_comfy_direct_cancel(comfy_process: ComfyTestServer) -> None:
    async with AsyncClient(comfy_process.url, kind="comfy") as client:
        job = await client.submit(SLOW)
        async for event in job.progress():
            if event.node == "2":
                break
        await job.cancel()
        result = await job.wait(timeout=30, check=False)
    assert result.status == "cancelled" and isinstance(result.error, JobInterrupted)


async def test_worker_local_api_cannot_cancel(worker: WorkerProcess) -> None:
    from comfyfleet.errors import Conflict

    async with AsyncClient(worker.url, kind="worker") as client:
        job = await client.submit(SOLID)
        with pytest.raises(Conflict, match="no /cancel"):
            await job.cancel()
        assert (await job.wait()).ok


# --- a lost answer: the submit is retried with its idempotency key ---------------------------
class Flaky:
    """A proxy in front of the gateway that forwards the first ``POST /api/v1/tasks`` but
    answers it 503 (the gateway queued it; the client never learns)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.posts = 0
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.forward)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient() as http:
            answer = await http.request(
                request.method, self.upstream + request.path_qs, content=body, headers=headers
            )
        if request.method == "POST" and request.path == "/api/v1/tasks":
            self.posts += 1
            if self.posts == 1:
                return web.Response(status=503, text="upstream timed out")
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=answer.headers.get("content-type", "").split(";")[0] or None,
        )


async def test_lost_submit_answer_is_retried_without_a_second_task(gateway: Served) -> None:
    flaky = Flaky(gateway.url)
    runner, url = await serve_app(flaky.app)
    try:
        async with AsyncClient(url, kind="gateway") as client:
            job = await client.submit(SOLID)
            result = await job.wait(timeout=30)
    finally:
        await runner.cleanup()
    assert flaky.posts == 2
    assert await gateway.count_tasks() == 1
    assert result.ok and [o.filename for o in result.outputs] == ["solid_00001_.png"]


class CutStream:
    """A proxy that cuts the first event stream after its first event (a dropped connection),
    and passes everything else through."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.streams = 0
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.forward)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with httpx.AsyncClient(timeout=None) as http:
            if request.path.endswith("/events"):
                self.streams += 1
                async with http.stream("GET", self.upstream + request.path_qs) as answer:
                    out = web.StreamResponse(headers={"content-type": "text/event-stream"})
                    await out.prepare(request)
                    async for chunk in answer.aiter_raw():
                        await out.write(chunk)
                        if self.streams == 1 and b"\n\n" in chunk:
                            assert request.transport is not None
                            request.transport.abort()  # the connection drops mid-stream
                            return out
                    return out
            answer = await http.request(
                request.method, self.upstream + request.path_qs, content=body,
                headers={"content-type": request.headers.get("content-type", "")},
            )  # fmt: skip
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=answer.headers.get("content-type", "").split(";")[0] or None,
        )


async def test_dropped_event_stream_is_resumed(gateway: Served) -> None:
    proxy = CutStream(gateway.url)
    runner, url = await serve_app(proxy.app)
    try:
        async with AsyncClient(url, kind="gateway") as client:
            job = await client.submit(SLOW | {"2": {**SLOW["2"], "inputs": {
                **SLOW["2"]["inputs"], "steps": 5}}})  # fmt: skip
            events = [event async for event in job.progress()]
            result = await job.wait(timeout=60)
    finally:
        await runner.cleanup()
    assert proxy.streams >= 2  # it reconnected
    assert result.ok and [o.filename for o in result.outputs] == ["slow_00001_.png"]
    assert events[0].status == "queued"
    stages = [e.stage for e in events]
    assert stages.count("queued") == 1 and stages.count("started") == 1, stages  # not replayed


# --- RunPod's cloud API (a stand-in) in front of the real worker -----------------------------
class RunPodCloud:
    """RunPod's /v2/{endpoint} API as its docs describe it: bearer key, /run → IN_QUEUE,
    GET /status (IN_PROGRESS with the worker's progress, then the result), /cancel. Jobs run
    on the real worker (its /runsync); images come back as presigned-looking bucket URLs on
    another host, as with the worker's S3 sink."""

    KEY = "rp-secret"

    def __init__(self, worker_url: str) -> None:
        self.worker_url = worker_url
        self.jobs: dict[str, dict[str, Any]] = {}
        self.bucket: dict[str, bytes] = {}
        self.bucket_headers: list[dict[str, str]] = []
        self.cancelled: list[str] = []
        self.api = web.Application()
        self.api.router.add_post("/v2/ep1/run", self.run)
        self.api.router.add_get("/v2/ep1/status/{id}", self.status)
        self.api.router.add_post("/v2/ep1/cancel/{id}", self.cancel)
        self.files = web.Application()
        self.files.router.add_get("/bucket/{name}", self.serve_file)
        self.bucket_url = ""

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.KEY}"

    async def run(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        job_id = f"rp-{len(self.jobs) + 1}"
        self.jobs[job_id] = {"input": (await request.json())["input"], "polls": 0}
        return web.json_response({"id": job_id, "status": "IN_QUEUE"})

    async def status(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        job_id = request.match_info["id"]
        job = self.jobs[job_id]
        job["polls"] += 1
        if job_id in self.cancelled:
            return web.json_response({"id": job_id, "status": "CANCELLED"})
        if job["polls"] == 1:
            progress = {"stage": "running", "node": "1", "class_type": "EmptyImage"}
            return web.json_response({"id": job_id, "status": "IN_PROGRESS", "output": progress})
        async with httpx.AsyncClient(timeout=60) as http:
            answer = (await http.post(self.worker_url + "/runsync", json=job)).json()
        for entry in (answer.get("output") or {}).get("images", []):
            self.bucket[entry["filename"]] = base64.b64decode(entry["data"])
            entry.update(
                type="s3_url", data=f"{self.bucket_url}/bucket/{entry['filename']}?X-Sig=1"
            )
        return web.json_response({**answer, "id": job_id})

    async def cancel(self, request: web.Request) -> web.Response:
        self.cancelled.append(request.match_info["id"])
        return web.json_response({"id": request.match_info["id"], "status": "CANCELLED"})

    async def serve_file(self, request: web.Request) -> web.Response:
        self.bucket_headers.append(dict(request.headers))
        return web.Response(body=self.bucket[request.match_info["name"]])


@pytest.fixture
async def runpod_cloud(worker: WorkerProcess) -> AsyncIterator[tuple[RunPodCloud, str]]:
    cloud = RunPodCloud(worker.url)
    runners = []
    urls = []
    for app in (cloud.api, cloud.files):
        runner, url = await serve_app(app)
        runners.append(runner)
        urls.append(url)
    cloud.bucket_url = urls[1]
    yield cloud, urls[0] + "/v2/ep1"
    for runner in runners:
        await runner.cleanup()


async def test_runpod_endpoint_polls_and_saves_bucket_urls(
    runpod_cloud: tuple[RunPodCloud, str], tmp_path: Path
) -> None:
    cloud, endpoint = runpod_cloud
    async with AsyncClient(endpoint, kind="runpod", api_key=RunPodCloud.KEY) as client:
        job = await client.submit(SOLID)
        events = [event async for event in job.progress()]
        result = await job.wait()
        paths = await result.asave(tmp_path)
    assert [(e.status, e.node) for e in events] == [("queued", None), ("running", "1")]
    assert [p.name for p in paths] == ["solid_00001_.png"]
    from PIL import Image

    assert Image.open(paths[0]).convert("RGB").getpixel((0, 0)) == (0, 255, 0)
    assert result.outputs[0].url.startswith(cloud.bucket_url)
    # the RunPod key went to RunPod, never to the bucket
    assert cloud.bucket_headers and all("Authorization" not in h for h in cloud.bucket_headers)


async def test_runpod_wrong_key_is_auth_error(runpod_cloud: tuple[RunPodCloud, str]) -> None:
    _, endpoint = runpod_cloud
    async with AsyncClient(endpoint, kind="runpod", api_key="wrong") as client:
        with pytest.raises(AuthError, match="401"):
            await client.submit(SOLID)


async def test_runpod_cancel(runpod_cloud: tuple[RunPodCloud, str]) -> None:
    cloud, endpoint = runpod_cloud
    async with AsyncClient(endpoint, kind="runpod", api_key=RunPodCloud.KEY) as client:
        job = await client.submit(SOLID)
        await job.cancel()
        result = await job.wait(check=False)
    assert cloud.cancelled == [job.id]
    assert result.status == "cancelled" and isinstance(result.error, JobInterrupted)


def test_static_kinds() -> None:
    from comfyfleet.client.targets.detect import static_kind
    from comfyfleet.client.targets.runpod import endpoint_url

    assert static_kind("abc123") == "runpod"
    assert static_kind("runpod://abc123") == "runpod"
    assert static_kind("https://api.runpod.ai/v2/abc123") == "runpod"
    assert static_kind("http://127.0.0.1:8080") is None
    assert endpoint_url("runpod://abc123") == "https://api.runpod.ai/v2/abc123"


async def test_sync_client_in_a_thread_while_loop_serves(gateway: Served, tmp_path: Path) -> None:
    """The blocking Client used from a thread; its own loop does not touch the caller's."""

    def script() -> list[Path]:
        from comfyfleet import Client

        with Client(gateway.url) as client:
            return client.run(SOLID).save(tmp_path)

    paths = await asyncio.to_thread(script)
    assert [p.name for p in paths] == ["solid_00001_.png"]


async def test_worker_local_api_status_of_a_job_it_did_not_submit(worker: WorkerProcess) -> None:
    """The local API's /status would run the job: the SDK says so instead of guessing."""
    from comfyfleet.errors import Conflict

    async with AsyncClient(worker.url, kind="worker") as client:
        job = await client.job("test-unknown")
        with pytest.raises(Conflict, match="without running it"):
            await job.status()
        mine = await client.submit(SOLID)
        assert (await mine.status()).status in ("queued", "running")
        assert (await mine.wait()).ok
        assert (await mine.status()).status == "succeeded"


async def test_runsync_answers_at_once(worker: WorkerProcess) -> None:
    async with AsyncClient(worker.url, kind="worker", sync=True) as client:
        job = await client.submit(SOLID)
        target = await client.target()
        assert job.id in target._final  # type: ignore[attr-defined]  (no /status needed)
        result = await job.wait()
    assert result.ok and [o.filename for o in result.outputs] == ["solid_00001_.png"]


LOAD_INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "url"}},
}


async def test_image_urls_are_fetched_by_the_target_and_refused_when_private(
    make_gateway_settings, comfy_process: ComfyTestServer, tmp_path: Path
) -> None:
    files = web.Application()

    async def picture(_request: web.Request) -> web.Response:
        return web.Response(body=png((0, 0, 0)), content_type="image/png")

    files.router.add_get("/a.png", picture)
    runner, base = await serve_app(files)
    try:
        for allow in (True, False):
            settings = make_gateway_settings(
                backends=[f"comfy={comfy_process.url}"], allow_private_urls=allow
            )
            async with serve(create_app(settings)) as served, AsyncClient(served.url) as client:
                if allow:
                    result = await client.run(LOAD_INVERT, images=[f"{base}/a.png"])
                    (path,) = await result.asave(tmp_path)
                else:
                    from comfyfleet.errors import ForbiddenURL

                    with pytest.raises(ForbiddenURL) as caught:
                        await client.submit(LOAD_INVERT, images=[f"{base}/a.png"])
    finally:
        await runner.cleanup()
    from PIL import Image

    assert Image.open(path).convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    assert "images[0]" in caught.value.message or caught.value.details.get("field") == "images[0]"


async def test_cli_submit_to_a_runpod_endpoint_with_the_key_from_env(
    runpod_cloud: tuple[RunPodCloud, str], tmp_path: Path
) -> None:
    import json
    import os
    import sys

    _, endpoint = runpod_cloud
    workflow = tmp_path / "solid.json"
    workflow.write_text(json.dumps(SOLID))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "RUNPOD_"))}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("comfyfleet")),
        "submit", str(workflow), "--target", endpoint, "--kind", "runpod",
        "--wait", "--out", str(tmp_path / "out"),
        env={**env, "RUNPOD_API_KEY": RunPodCloud.KEY},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    body = json.loads(out)
    assert body["status"] == "succeeded"
    (saved,) = body["outputs"]
    assert saved["url"].startswith(runpod_cloud[0].bucket_url)
    assert Path(saved["path"]).read_bytes()[:4] == b"\x89PNG"
