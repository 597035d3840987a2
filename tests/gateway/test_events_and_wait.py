"""Server-sent events and ``?wait``, with the task driven through the queue exactly as a local
agent drives it (the fleet's `QueueSource`, publishing on the gateway's event bus)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from comfyfleet.fleet.local import QueueSource
from comfyfleet.jobs import Artifact, JobResult

from .gateway_helpers import ENGINES, WORKFLOW, Served, sse_events


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def agent_for(served: Served) -> QueueSource:
    gw = served.gateway
    return QueueSource(
        gw.queue,
        owner="agent-1",
        backend="box",
        lease_seconds=30,
        job_timeout=60,
        events=gw.events,
    )


async def png_chunks() -> AsyncIterator[bytes]:
    yield b"\x89PNG\r\n\x1a\n"
    yield b"rest-of-image"


async def test_events_follow_a_task_live_in_order(gateway: Served) -> None:
    source = agent_for(gateway)
    async with gateway.client() as http:
        task_id = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
        async with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = sse_events(response)
            name, data = await anext(stream)
            assert (name, data["status"]) == ("queued", "queued")

            lease = await source.claim(wait=5)
            assert lease is not None
            name, data = await anext(stream)
            assert (name, data["backend"], data["attempts"]) == ("started", "box", 1)

            source.progress(lease, {"job_id": task_id, "stage": "running", "percent": 50.0})
            name, data = await anext(stream)
            assert (name, data["percent"]) == ("progress", 50.0)

            sink = gateway.gateway.artifacts.sink(task_id)
            artifact = await sink.store(
                Artifact(node_id="9", filename="out.png", media_type="image/png"), png_chunks()
            )
            result = JobResult(job_id=task_id, artifacts=[artifact])
            await source.complete(lease, result.model_dump(mode="json"))
            name, data = await anext(stream)
            assert name == "artifacts"
            url = data["artifacts"][0]["url"]
            assert url == f"{gateway.url}/api/v1/tasks/{task_id}/artifacts/out.png"
            name, data = await anext(stream)
            assert (name, data["status"]) == ("finished", "succeeded")
            assert data["result"]["artifacts"][0]["url"] == url
            assert [event async for event in stream] == []  # the stream ended
        image = await http.get(url)
    assert image.content == b"\x89PNG\r\n\x1a\nrest-of-image"


async def test_events_replay_a_finished_task(gateway: Served) -> None:
    source = agent_for(gateway)
    async with gateway.client() as http:
        task_id = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
        lease = await source.claim(wait=5)
        assert lease is not None
        await source.fail(
            lease, {"code": "node_execution_error", "message": "boom"}, retryable=False, backoff=0
        )
        async with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            events = [event async for event in sse_events(response)]
    assert [name for name, _ in events] == ["queued", "started", "finished"]
    assert events[-1][1]["status"] == "failed"
    assert events[-1][1]["error"]["message"] == "boom"


async def test_events_show_a_retry_as_queued_again(gateway: Served) -> None:
    source = agent_for(gateway)
    async with gateway.client() as http:
        task_id = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
        async with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            stream = sse_events(response)
            assert (await anext(stream))[0] == "queued"
            lease = await source.claim(wait=5)
            assert lease is not None
            assert (await anext(stream))[0] == "started"
            await source.fail(
                lease, {"code": "comfy_unavailable", "message": "gone"}, retryable=True, backoff=0
            )
            name, data = await anext(stream)
            assert (name, data["retry"], data["error"]["code"]) == (
                "queued",
                True,
                "comfy_unavailable",
            )
            lease = await source.claim(wait=5)
            assert lease is not None
            name, data = await anext(stream)
            assert (name, data["attempts"]) == ("started", 2)
            await gateway.gateway.fleet.cancel(task_id)
            await source.fail(
                lease, {"code": "interrupted", "message": "cancelled"}, retryable=False, backoff=0
            )
            name, data = await anext(stream)
            assert (name, data["status"]) == ("finished", "cancelled")


async def test_events_of_a_task_cancelled_while_queued(gateway: Served) -> None:
    async with gateway.client() as http:
        task_id = (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
        async with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            stream = sse_events(response)
            assert (await anext(stream))[0] == "queued"
            await http.post(f"/api/v1/tasks/{task_id}/cancel")
            name, data = await anext(stream)
    assert (name, data["status"]) == ("finished", "cancelled")


async def test_events_of_an_unknown_task_is_404(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.get("/api/v1/tasks/unknown/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_wait_answers_with_the_result_once_finished(gateway: Served) -> None:
    source = agent_for(gateway)

    async def agent() -> None:
        lease = await source.claim(wait=30)
        assert lease is not None
        result = JobResult(job_id=lease.task_id, timings={"run": 0.5})
        await source.complete(lease, result.model_dump(mode="json"))

    running = asyncio.create_task(agent())
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks?wait=30", json={"workflow": WORKFLOW})
    await running
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["result"]["timings"] == {"run": 0.5}
    assert body["timings"]["run"] == 0.5 and "total_seconds" in body["timings"]


async def test_wait_times_out_with_the_current_status(gateway: Served) -> None:
    async with gateway.client() as http:
        response = await http.post("/api/v1/tasks?wait=0.2", json={"workflow": WORKFLOW})
        task_id = response.json()["id"]
        polled = await http.get(f"/api/v1/tasks/{task_id}?wait=0.2")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["position"] == 1
    assert polled.status_code == 200 and polled.json()["status"] == "queued"
