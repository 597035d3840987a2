"""Webhooks: signed POSTs from the outbox to a real local receiver, retried after failures,
every attempt visible on the task."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from comfyfleet.config import Settings
from comfyfleet.fleet.local import QueueSource
from comfyfleet.gateway.app import create_app
from comfyfleet.outputs.webhooks import SIGNATURE_HEADER, sign, verify

from .gateway_helpers import ENGINES, WORKFLOW, Served, serve


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class Receiver:
    """A webhook endpoint answering with ``statuses`` in turn (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "nope")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    settings = make_settings(webhook_max_attempts=3, webhook_backoff=0.05)
    async with serve(create_app(settings)) as served:
        yield served


def attempts_seen(served: Served) -> asyncio.Queue[bool]:
    """Each finished delivery attempt's outcome, as the deliverer records it."""
    outcomes: asyncio.Queue[bool] = asyncio.Queue()
    deliverer = served.gateway.deliverer
    original = deliverer.observer

    def observe(delivery: Any, ok: bool, error: str | None) -> None:
        if original is not None:
            original(delivery, ok, error)
        outcomes.put_nowait(ok)

    deliverer.observer = observe
    return outcomes


async def test_finished_task_is_posted_signed(gateway: Served, receiver: Receiver) -> None:
    outcomes = attempts_seen(gateway)
    async with gateway.client() as http:
        task = (
            await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "webhook": receiver.url})
        ).json()
        source = QueueSource(
            gateway.gateway.queue,
            owner="test-agent",
            backend="test",
            lease_seconds=30,
            job_timeout=60,
            events=gateway.gateway.events,
        )
        lease = await source.claim(wait=5)
        assert lease is not None and lease.task_id == task["id"]
        await source.complete(lease, {"job_id": task["id"], "status": "succeeded", "artifacts": []})
        assert await outcomes.get() is True
        shown = (await http.get(f"/api/v1/tasks/{task['id']}")).json()

    headers, body = receiver.calls[0]
    payload = json.loads(body)
    assert payload["event"] == "task.finished"
    assert payload["id"] == task["id"] and payload["status"] == "succeeded"
    assert payload["result"]["status"] == "succeeded"
    signature = headers[SIGNATURE_HEADER]
    assert verify("test-secret", signature, body)
    fields = dict(part.split("=", 1) for part in signature.split(","))
    expected = hmac.new(b"test-secret", f"{fields['t']}.".encode() + body, hashlib.sha256)
    assert fields["v1"] == expected.hexdigest()
    assert headers["Content-Type"] == "application/json"
    delivery = shown["webhook"]["deliveries"][0]
    assert shown["webhook"]["url"] == receiver.url
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)
    assert delivery["delivered_at"] is not None


async def test_failing_receiver_is_retried_and_attempts_show(
    gateway: Served, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    outcomes = attempts_seen(gateway)
    async with gateway.client() as http:
        task = (
            await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "webhook": receiver.url})
        ).json()
        await http.post(f"/api/v1/tasks/{task['id']}/cancel")
        assert [await outcomes.get() for _ in range(3)] == [False, False, True]
        shown = (await http.get(f"/api/v1/tasks/{task['id']}")).json()
    assert len(receiver.calls) == 3
    assert all(json.loads(body)["status"] == "cancelled" for _, body in receiver.calls)
    assert all(verify("test-secret", h[SIGNATURE_HEADER], b) for h, b in receiver.calls)
    (delivery,) = shown["webhook"]["deliveries"]
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 3)
    assert delivery["last_error"] is None


async def test_gives_up_after_max_attempts(gateway: Served, receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500, 500]
    outcomes = attempts_seen(gateway)
    async with gateway.client() as http:
        task = (
            await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "webhook": receiver.url})
        ).json()
        await http.post(f"/api/v1/tasks/{task['id']}/cancel")
        assert [await outcomes.get() for _ in range(3)] == [False, False, False]
        shown = (await http.get(f"/api/v1/tasks/{task['id']}")).json()
        metrics = (await http.get("/metrics")).text
    (delivery,) = shown["webhook"]["deliveries"]
    assert delivery["state"] == "failed"
    assert delivery["attempts"] == 3
    assert delivery["last_error"] == "HTTP 500"
    assert delivery["next_attempt_at"] is None
    assert 'comfyfleet_webhook_deliveries_total{outcome="error"} 3.0' in metrics


async def test_unreachable_receiver_records_the_connection_error(gateway: Served) -> None:
    outcomes = attempts_seen(gateway)
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    async with gateway.client() as http:
        task = await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "webhook": dead})
        await http.post(f"/api/v1/tasks/{task.json()['id']}/cancel")
        assert await outcomes.get() is False
        shown = (await http.get(f"/api/v1/tasks/{task.json()['id']}")).json()
    delivery = shown["webhook"]["deliveries"][0]
    assert "ConnectError" in delivery["last_error"]


def test_signature_rejects_tampering_and_stale_timestamps() -> None:
    body = b'{"id":"1"}'
    header = sign("s3cret", body)
    assert verify("s3cret", header, body)
    assert not verify("s3cret", header, b'{"id":"2"}')
    assert not verify("other", header, body)
    assert not verify("s3cret", sign("s3cret", body, timestamp=1_000_000), body)
    assert not verify("s3cret", "garbage", body)
