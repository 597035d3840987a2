"""Progress webhooks: a task with ``webhook_progress`` gets signed ``task.progress`` POSTs while
it runs (rate-limited per task), then its final webhook; a receiver that fails or hangs never
slows down or fails the run. Real gateway, real ComfyUI test server, real loopback receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.outputs.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify
from comfyfleet.testing import ComfyTestServer

from .gateway_helpers import WORKFLOW, Served, serve

SECRET = "test-secret"  # make_settings' webhook secret


@dataclass
class Receiver:
    """Records every POST; answers ``status`` after waiting for ``release`` (if set)."""

    url: str = ""
    status: int = 200
    release: asyncio.Event | None = None
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((dict(request.headers), body))
        self.arrived.put_nowait(json.loads(body))
        if self.release is not None:
            await self.release.wait()
        return web.Response(status=self.status)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(b) for h, b in self.calls if h.get(EVENT_HEADER) == name]

    async def until(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                body = await self.arrived.get()
                if body["event"] == event:
                    return body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    if hook.release is not None:
        hook.release.set()
    await runner.cleanup()


def slow(steps: int, seconds_per_step: float) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": seconds_per_step},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "p"}},
    }


@pytest.fixture
def make_gateway(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer
) -> Callable[..., Any]:
    def make(**overrides: Any) -> Any:
        settings = make_settings(backends=[f"comfy={comfy_server.url}"], **overrides)
        return serve(create_app(settings))

    return make


async def submit(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    async with served.client() as http:
        response = await http.post("/api/v1/tasks?wait=60", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_progress_callbacks_are_signed_ordered_then_final(
    make_gateway: Callable[..., Any], receiver: Receiver
) -> None:
    async with make_gateway(webhook_progress_interval=0.0) as served:
        task = await submit(
            served, {"workflow": slow(8, 0.05), "webhook": receiver.url, "webhook_progress": True}
        )
        assert task["status"] == "succeeded"
        await receiver.until("task.finished")
    progress = receiver.events("task.progress")
    assert len(progress) >= 2
    for headers, body in receiver.calls:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body)
    assert {p["id"] for p in progress} == {task["id"]}
    progress.sort(key=lambda p: p["seq"])  # up to 4 POSTs are in flight at once
    assert [p["seq"] for p in progress] == list(range(1, len(progress) + 1))  # none lost
    steps = [p["progress"] for p in progress if p["progress"].get("max")]
    assert {s["class_type"] for s in steps} == {"FleetTestSlow"}, progress
    values = [s["value"] for s in steps]
    assert values == sorted(values) and values[-1] == 8
    # The final webhook comes from the outbox as always, and is the last call.
    assert json.loads(receiver.calls[-1][1])["event"] == "task.finished"


async def test_rate_limit_sends_one_step_per_interval(
    make_gateway: Callable[..., Any], receiver: Receiver
) -> None:
    # An interval longer than the run: the first step goes out, every later one is held and
    # dropped when the task stops running (its final webhook says how it ended).
    async with make_gateway(webhook_progress_interval=3600.0) as served:
        task = await submit(
            served, {"workflow": slow(20, 0.01), "webhook": receiver.url, "webhook_progress": True}
        )
        await receiver.until("task.finished")
    assert task["status"] == "succeeded"
    assert len(receiver.events("task.progress")) == 1


async def test_no_progress_callbacks_unless_asked(
    make_gateway: Callable[..., Any], receiver: Receiver
) -> None:
    async with make_gateway(webhook_progress_interval=0.0) as served:
        await submit(served, {"workflow": slow(5, 0.01), "webhook": receiver.url})
        await receiver.until("task.finished")
    assert [json.loads(b)["event"] for _, b in receiver.calls] == ["task.finished"]


async def test_a_hanging_or_failing_receiver_never_holds_up_the_run(
    make_gateway: Callable[..., Any], receiver: Receiver
) -> None:
    receiver.release = asyncio.Event()  # every call hangs until the end of the test
    receiver.status = 500
    async with make_gateway(webhook_progress_interval=0.0, webhook_timeout=30.0) as served:
        task = await submit(
            served, {"workflow": slow(30, 0.01), "webhook": receiver.url, "webhook_progress": True}
        )
        # The run finished although every progress POST is still waiting for an answer.
        assert task["status"] == "succeeded"
        assert receiver.events("task.progress")
        hooks = served.gateway.events.progress_hooks
        assert hooks is not None and not hooks._urls  # nothing tracked once it finished
        receiver.release.set()


async def test_webhook_progress_needs_a_webhook(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway() as served:
        async with served.client() as http:
            response = await http.post(
                "/api/v1/tasks", json={"workflow": WORKFLOW, "webhook_progress": True}
            )
        assert response.status_code == 400
        assert response.json()["error"]["details"]["field"] == "webhook_progress"
        assert await served.count_tasks() == 0


async def test_a_remote_agents_progress_is_called_back_too(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    """A task claimed over the agent protocol: its heartbeats' progress goes out as well."""
    settings = make_settings(webhook_progress_interval=0.0)
    async with serve(create_app(settings)) as served, served.client() as http:
        body = {"workflow": WORKFLOW, "webhook": receiver.url, "webhook_progress": True}
        task = (await http.post("/api/v1/tasks", json=body)).json()
        ident = {"agent_id": "r1", "name": "gpu-remote"}
        claim = await http.post("/api/v1/agent/claim", json=ident)
        assert claim.json()["task_id"] == task["id"]
        step = {"stage": "running", "node": "1", "value": 3, "max": 10, "percent": 30.0}
        beat = await http.post(
            f"/api/v1/agent/tasks/{task['id']}/heartbeat", json={**ident, "progress": step}
        )
        assert beat.status_code == 200
        called = await receiver.until("task.progress")
    assert called["id"] == task["id"]
    assert called["progress"] == step
