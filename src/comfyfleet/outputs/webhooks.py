"""Webhook delivery from the queue's outbox, signed so receivers can trust it.

The queue writes an outbox row in the same transaction that finishes a task, so a webhook is
owed exactly when a task finished, even if the gateway crashes right after. `WebhookDeliverer`
takes due rows (leased, so replicas do not double-send), POSTs them and records the outcome on
the row, which is what ``GET /api/v1/tasks/{id}`` shows as ``webhook.deliveries``. Failures are
retried with exponential backoff until ``max_attempts``.

`ProgressWebhooks` sends the optional ``task.progress`` callbacks while a task runs: the same
signature, rate-limited per task, best effort (not through the outbox).

Signature: ``X-Comfyfleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
over the exact body bytes, like Stripe's scheme; `verify` is the receiver's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from comfyfleet import __version__
from comfyfleet.queue import Queue, WebhookDelivery

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Comfyfleet-Signature"
DELIVERY_HEADER = "X-Comfyfleet-Delivery"
EVENT_HEADER = "X-Comfyfleet-Event"

Observer = Callable[[WebhookDelivery, bool, str | None], None]


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` s old."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        ts = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    expected = sign(secret, body, ts).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


class WebhookDeliverer:
    """Drains the outbox: run `run()` as a task, call `nudge()` when a task may have finished."""

    def __init__(
        self,
        queue: Queue,
        secret: str,
        *,
        max_attempts: int = 8,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 600.0,
        timeout: float = 10.0,
        idle_seconds: float = 1.0,
        batch: int = 10,
        observer: Observer | None = None,
    ) -> None:
        self.queue = queue
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self.batch = batch
        self.observer = observer
        self._wake = asyncio.Event()
        self._retry_due: float | None = None  # loop time of the soonest retry we scheduled

    def nudge(self) -> None:
        """Look at the outbox now instead of after the idle interval."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(attempts - 1, 0))

    async def run(self) -> None:
        """Deliver until cancelled. Retries wait for their time; new rows wait for a nudge or
        the idle interval (the outbox may also be filled by another replica)."""
        limits = httpx.Limits(max_connections=self.batch)
        async with httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, limits=limits
        ) as client:
            while True:
                try:
                    sent = await self.deliver_due(client)
                except Exception:  # the queue may be briefly unreachable; keep the loop alive
                    log.exception("webhook outbox scan failed")
                    sent = 0
                if sent:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())

    def _idle_timeout(self) -> float:
        wait = self.idle_seconds
        if self._retry_due is not None:
            wait = min(wait, max(0.0, self._retry_due - asyncio.get_running_loop().time()))
            self._retry_due = None
        return wait

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """One pass: deliver every due row (leased by `due_webhooks`); returns how many."""
        due = await self.queue.due_webhooks(limit=self.batch, lease_seconds=self.timeout * 3)
        outcomes = await asyncio.gather(
            *(self._deliver(client, d) for d in due), return_exceptions=True
        )
        for delivery, outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, Exception):  # recording it failed; the lease brings it back
                log.error("webhook delivery %s: %r", delivery.id, outcome)
        return len(due)

    async def _deliver(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        body = encode(delivery.body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"comfyfleet/{__version__}",
            SIGNATURE_HEADER: sign(self.secret, body),
            DELIVERY_HEADER: str(delivery.id),
            EVENT_HEADER: str(delivery.body.get("event", "task.finished")),
        }
        error: str | None = None
        try:
            response = await client.post(delivery.url, content=body, headers=headers)
            if not response.is_success:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if error is None:
            await self.queue.webhook_delivered(delivery.id)
        else:
            # ``attempts`` already counts this attempt (due_webhooks counted it).
            retry_at = None
            if delivery.attempts < self.max_attempts:
                delay = self.backoff(delivery.attempts)
                retry_at = self.queue.clock() + timedelta(seconds=delay)
                due = asyncio.get_running_loop().time() + delay
                self._retry_due = due if self._retry_due is None else min(self._retry_due, due)
            log.warning(
                "webhook delivery %s for task %s failed (%s), attempt %d/%d%s",
                delivery.id,
                delivery.task_id,
                error,
                delivery.attempts,
                self.max_attempts,
                "" if retry_at else ", giving up",
            )
            await self.queue.webhook_failed(delivery.id, error, retry_at)
        if self.observer is not None:
            self.observer(delivery, error is None, error)


class ProgressWebhooks:
    """Progress callbacks (``task.progress``) for tasks that asked for them, besides the final
    webhook: signed like it, at most one per ``interval`` seconds per task (the latest step of
    an interval is sent at its end, so the last step before a pause is never lost), sent
    fire-and-forget from a bounded queue. A full queue drops the step, a failed POST is logged
    and not retried: progress must never slow down, block or fail a run, and the final
    webhook (durable, from the outbox) is what a receiver can rely on.

    Call `track` when a task starts (``url`` is its webhook), `offer` for each step, `forget`
    when it stops running; all three are synchronous and cheap (event-loop thread only)."""

    def __init__(
        self,
        secret: str,
        *,
        interval: float = 1.0,
        timeout: float = 5.0,
        maxsize: int = 256,
        concurrency: int = 4,
        observer: Callable[[bool], None] | None = None,
    ) -> None:
        self.secret = secret
        self.interval = interval
        self.timeout = timeout
        self.concurrency = concurrency
        self.observer = observer
        self.dropped = 0
        self._outbox: asyncio.Queue[tuple[str, str, dict[str, Any], int]] = asyncio.Queue(maxsize)
        self._urls: dict[str, str] = {}
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, dict[str, Any]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._seq: dict[str, int] = {}

    def track(self, task_id: str, url: str) -> None:
        self._urls[task_id] = url

    def forget(self, task_id: str) -> None:
        """The task stopped running: drop its held step (the final webhook follows)."""
        self._urls.pop(task_id, None)
        self._last_sent.pop(task_id, None)
        self._held.pop(task_id, None)
        self._seq.pop(task_id, None)
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()

    def offer(self, task_id: str, progress: dict[str, Any]) -> None:
        if task_id not in self._urls:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_sent.get(task_id, -math.inf) + self.interval - loop.time()
        if wait <= 0:
            self._send(task_id, progress)
            return
        self._held[task_id] = progress  # only the latest step of an interval is sent
        if task_id not in self._timers:
            self._timers[task_id] = loop.call_later(wait, self._flush, task_id)

    def _flush(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        progress = self._held.pop(task_id, None)
        if progress is not None and task_id in self._urls:
            self._send(task_id, progress)

    def _send(self, task_id: str, progress: dict[str, Any]) -> None:
        self._last_sent[task_id] = asyncio.get_running_loop().time()
        seq = self._seq[task_id] = self._seq.get(task_id, 0) + 1
        step = {k: v for k, v in progress.items() if k not in ("type", "task_id")}
        try:
            self._outbox.put_nowait((self._urls[task_id], task_id, step, seq))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        """POST queued steps until cancelled (``concurrency`` at a time)."""
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            url, task_id, step, seq = await self._outbox.get()
            body = encode(
                {
                    "event": "task.progress",
                    "id": task_id,
                    "seq": seq,
                    "progress": step,
                    "sent_at": datetime.now(UTC).isoformat(),
                }
            )
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"comfyfleet/{__version__}",
                SIGNATURE_HEADER: sign(self.secret, body),
                DELIVERY_HEADER: f"{task_id}:progress:{seq}",
                EVENT_HEADER: "task.progress",
            }
            ok = False
            try:
                response = await client.post(url, content=body, headers=headers)
                ok = response.is_success
                if not ok:
                    log.info("progress webhook for %s: HTTP %d", task_id, response.status_code)
            except httpx.HTTPError as exc:
                log.info("progress webhook for %s: %s", task_id, type(exc).__name__)
            except Exception:  # never let one bad step stop the sender
                log.exception("progress webhook for %s", task_id)
            if self.observer is not None:
                self.observer(ok)
