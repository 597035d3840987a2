"""Everything a running gateway holds, opened and closed in the app's lifespan.

Opening order matters for a clean start and stop: the queue first (nothing works without it),
then the artifact store, the fleet (agents claim from the queue) and the webhook deliverer;
closing goes the other way so no agent reports into a closed queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.config import Settings
from comfyfleet.fleet.events import Event, TaskEvents, is_final
from comfyfleet.fleet.manager import Fleet
from comfyfleet.gateway.auth import KeyRing
from comfyfleet.gateway.metrics import GatewayMetrics
from comfyfleet.outputs.artifacts import ArtifactStore
from comfyfleet.outputs.webhooks import ProgressWebhooks, WebhookDeliverer
from comfyfleet.queue import Queue, open_queue

log = logging.getLogger(__name__)

DEMO_LABEL = "DEMO (test server, not a real ComfyUI)"
_MAX_TRACKED = 10_000  # running tasks whose start time the duration histogram remembers


def database_target(settings: Settings) -> str:
    """The queue's URL: ``database_url`` or SQLite under the data directory."""
    return settings.database_url or str(Path(settings.data_dir) / "queue.db")


def describe_database(settings: Settings) -> str:
    """For banners and logs: the engine and where, never a password."""
    if settings.database_url:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.database_url)
        host = parts.hostname or "localhost"
        where = f"{host}:{parts.port}" if parts.port else host
        return f"PostgreSQL {where}{parts.path} (schema {settings.database_schema})"
    return f"SQLite {database_target(settings)}"


def webhook_secret(settings: Settings) -> str:
    """The configured secret, else one generated once and kept under the data directory (so
    receivers can be configured with it; replicas sharing a database must set it explicitly)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path = Path(settings.data_dir) / "webhook_secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


class GatewayEvents(TaskEvents):
    """The fleet's event bus, also feeding this process's run-time histogram and waking the
    webhook deliverer as soon as a task finishes."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()
        self.metrics = metrics
        self.deliverer: WebhookDeliverer | None = None
        self.progress_hooks: ProgressWebhooks | None = None
        self.listeners: set[asyncio.Queue[Event]] = set()  # every task's events (dashboard)
        self._started: dict[str, float] = {}

    def publish(self, task_id: str, event: Event) -> None:
        super().publish(task_id, event)
        for listener in self.listeners:
            with contextlib.suppress(asyncio.QueueFull):  # a slow reader misses steps
                listener.put_nowait({"task_id": task_id, **event})
        hooks = self.progress_hooks
        if event.get("type") == "progress":
            if hooks is not None:
                hooks.offer(task_id, event)
            return
        if event.get("type") != "status":
            return
        if hooks is not None:
            url = event.get("progress_webhook")
            if url and event.get("status") == "running":
                hooks.track(task_id, url)
            elif event.get("status") != "running":
                hooks.forget(task_id)
        if event.get("status") == "running":
            if len(self._started) >= _MAX_TRACKED:  # finished elsewhere (lease lost): forget
                del self._started[next(iter(self._started))]
            self._started[task_id] = time.monotonic()
        elif is_final(event):
            started = self._started.pop(task_id, None)
            if started is not None:
                self.metrics.durations.labels(event["status"]).observe(time.monotonic() - started)
            if self.deliverer is not None and event.get("webhook"):
                # (only a task with a webhook has an outbox row; a scan per task without
                # one was a write transaction on the queue's thread per task)
                self.deliverer.nudge()
        elif event.get("status") == "queued":
            self._started.pop(task_id, None)


@dataclass
class Gateway:
    settings: Settings
    keys: KeyRing
    queue: Queue
    artifacts: ArtifactStore
    metrics: GatewayMetrics
    events: GatewayEvents
    fleet: Fleet
    deliverer: WebhookDeliverer
    demo: bool = False
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    def backends(self) -> list[dict[str, Any]]:
        backends = self.fleet.backends()
        for backend in backends:
            backend["label"] = DEMO_LABEL if backend.get("name") == DEMO_LABEL else None
        return backends


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, keys: KeyRing, *, demo: bool = False
) -> AsyncIterator[Gateway]:
    """Open everything; yield the gateway; close everything. ``demo`` first starts the
    ComfyUI test server and adds it as a backend named `DEMO_LABEL`."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        if demo:
            from comfyfleet.testing import ComfyTestServer

            server = ComfyTestServer(root=Path(settings.data_dir) / "demo-comfyui")
            await stack.enter_async_context(server)
            backends = [*settings.backends, f"{DEMO_LABEL}={server.url}"]
            settings = settings.model_copy(update={"backends": backends})
        yield await stack.enter_async_context(_running(settings, keys, demo))


@contextlib.asynccontextmanager
async def _running(settings: Settings, keys: KeyRing, demo: bool) -> AsyncIterator[Gateway]:
    options: dict[str, Any] = {}
    if settings.database_url:
        options["schema"] = settings.database_schema
    queue = open_queue(database_target(settings), **options)
    await queue.open()
    metrics = GatewayMetrics()
    events = GatewayEvents(metrics)
    artifacts = ArtifactStore.from_settings(settings)
    deliverer = WebhookDeliverer(
        queue,
        webhook_secret(settings),
        max_attempts=settings.webhook_max_attempts,
        backoff_seconds=settings.webhook_backoff,
        timeout=settings.webhook_timeout,
        observer=lambda _d, ok, _e: metrics.webhooks.labels("ok" if ok else "error").inc(),
    )
    events.deliverer = deliverer
    events.progress_hooks = ProgressWebhooks(
        deliverer.secret,
        interval=settings.webhook_progress_interval,
        timeout=settings.webhook_timeout,
        observer=lambda ok: metrics.webhooks.labels(
            "progress_ok" if ok else "progress_error"
        ).inc(),
    )
    fleet = Fleet(settings, queue, sink_for=artifacts.sink, events=events)
    gateway = Gateway(settings, keys, queue, artifacts, metrics, events, fleet, deliverer, demo)
    try:
        await fleet.start()
        gateway.background.append(asyncio.create_task(deliverer.run(), name="webhooks"))
        gateway.background.append(
            asyncio.create_task(events.progress_hooks.run(), name="progress-webhooks")
        )
        yield gateway
    finally:
        for task in gateway.background:
            task.cancel()
        await asyncio.gather(*gateway.background, return_exceptions=True)
        await fleet.stop()
        await queue.close()
