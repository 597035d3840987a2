"""The webhook deliverer is woken when a task with a webhook finishes, and only then: a task
without one has no outbox row, and a scan per finished task was a write transaction on the
queue per task on the way of the next one."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.fleet.local import status_event
from comfyfleet.gateway.metrics import GatewayMetrics
from comfyfleet.gateway.state import GatewayEvents
from comfyfleet.outputs.webhooks import WebhookDeliverer
from comfyfleet.queue.sqlite import SqliteQueue


async def test_only_a_finished_task_with_a_webhook_wakes_the_deliverer(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as queue:
        events = GatewayEvents(GatewayMetrics())
        deliverer = events.deliverer = WebhookDeliverer(queue, "secret")
        woken = deliverer._wake

        async def finish(webhook: str | None) -> None:
            await queue.submit({"spec": {}}, webhook_url=webhook)
            task = await queue.claim("agent", 30)
            assert task is not None
            events.publish(task.id, status_event(task))  # running: never wakes it
            assert not woken.is_set()
            done = await queue.complete(task.id, "agent", {"artifacts": []})
            events.publish(done.id, status_event(done))

        await finish(None)
        assert not woken.is_set()
        await finish("https://example.com/hook")
        assert woken.is_set()
        assert len(await queue.due_webhooks(limit=10, lease_seconds=30)) == 1  # its row is due
