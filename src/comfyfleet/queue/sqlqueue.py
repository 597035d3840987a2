"""The contract written once over named queries; engines supply connections and encodings.

Each operation is one statement (state changes and their webhook outbox rows land together
because the outbox is filled by a trigger), so an engine only has to say how to run one named
query, how to encode times and JSON, and what to wake after a change.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import logging
import os
import time
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from comfyfleet.errors import Conflict, InvalidRequest, NotFound
from comfyfleet.queue.base import (
    STATUSES,
    Fit,
    HeartbeatAnswer,
    QueueStats,
    Task,
    TaskPage,
    TaskStatus,
    WebhookDelivery,
)
from comfyfleet.queue.records import Convert, delivery_from_row, task_from_row
from comfyfleet.queue.waiting import EventQueue

Row = Mapping[str, Any]
log = logging.getLogger(__name__)

TIMEOUT_ERROR = {"code": "timeout", "message": "the task ran past its deadline"}
LEASE_ERROR = {"code": "lease_expired", "message": "the agent stopped heartbeating"}
# A succeeded task's progress, whatever the last heartbeat recorded (heartbeats are rate-limited,
# so the agent's own final report rarely reaches the queue before its `complete`).
DONE_PROGRESS = {"stage": "done", "percent": 100.0}


def new_task_id() -> str:
    """32 hex digits that sort by creation time (48-bit ms + 80 random bits, like UUIDv7):
    new ids land at the right edge of the id index instead of all over it."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class SqlQueue(EventQueue):
    def __init__(self) -> None:
        super().__init__()
        self._handing_back: set[asyncio.Future[Any]] = set()  # claims nobody received
        self._have_encoded: tuple[frozenset[str], Any] | None = None  # see `_fit`

    # --- what an engine provides ------------------------------------------------------------
    time_in: Convert  # datetime -> stored time
    time_out: Convert  # stored time -> datetime
    json_in: Convert
    json_out: Convert

    @abc.abstractmethod
    async def _rows(self, query: str, params: dict[str, Any]) -> builtins.list[Row]:
        """Run one named query in its own transaction; unique violations raise Conflict."""

    def _targets(self, targets: Collection[str] | None) -> Any:
        return None if targets is None else builtins.list(targets)

    def _changed(self, tasks: Collection[Task]) -> None:
        """Called after a commit that changed ``tasks`` (engines without NOTIFY fire here)."""

    def _progressed(self, task_id: str) -> None:
        """Called after a heartbeat recorded progress."""

    # --- helpers ------------------------------------------------------------------------------
    async def _row(self, query: str, params: dict[str, Any]) -> Row | None:
        rows = await self._rows(query, params)
        return rows[0] if rows else None

    def _now(self) -> Any:
        return self.time_in(self.clock())

    def _when(self, value: datetime | None) -> Any:
        """A caller's datetime, stored; naive ones are refused (local or UTC? nobody knows)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvalidRequest(f"datetime {value.isoformat()} has no timezone")
        return self.time_in(value)

    def _task(self, row: Row, deliveries: tuple[WebhookDelivery, ...] = ()) -> Task:
        return task_from_row(row, time=self.time_out, json=self.json_out, deliveries=deliveries)

    def _delivery(self, row: Row) -> WebhookDelivery:
        return delivery_from_row(row, time=self.time_out, json=self.json_out)

    def _maybe(self, value: Any, convert: Convert) -> Any:
        return None if value is None else convert(value)

    async def _existing(self, task_id: str) -> Row:
        row = await self._row("get_task", {"id": task_id})
        if row is None:
            raise NotFound(f"task {task_id} not found", task_id=task_id)
        return row

    # --- producing ----------------------------------------------------------------------------
    async def submit(
        self,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int = 3,
        timeout_seconds: float | None = None,
        webhook_url: str | None = None,
        run_at: datetime | None = None,
        target: str | None = None,
        task_id: str | None = None,
        fingerprint: str | None = None,
        models: Collection[str] | None = None,
        checkpoint: str | None = None,
    ) -> tuple[Task, bool]:
        if max_attempts < 1:
            raise InvalidRequest("max_attempts must be at least 1", max_attempts=max_attempts)
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise InvalidRequest("timeout_seconds must be positive", timeout=timeout_seconds)
        task_id = task_id or new_task_id()
        now = self._now()
        params = {
            "id": task_id,
            "priority": priority,
            "payload": self.json_in(payload),
            "idempotency_key": idempotency_key,
            "max_attempts": max_attempts,
            "run_at": now if run_at is None else self._when(run_at),
            "timeout_seconds": timeout_seconds,
            "target": target,
            "webhook_url": webhook_url,
            "request_fingerprint": fingerprint,
            "models": self.json_in(builtins.list(models)) if models else None,
            "checkpoint": checkpoint,
            "now": now,
        }
        for _ in range(3):  # the keyed task may be purged between the two statements
            try:
                row = await self._row("insert_task", params)
            except Conflict:
                raise Conflict(f"task {task_id} already exists", task_id=task_id) from None
            if row is not None:
                task = self._task(row)
                self._changed([task])
                return task, True
            row = await self._row("get_task_by_key", {"idempotency_key": idempotency_key})
            if row is not None:
                _same_request(row, idempotency_key, fingerprint)
                return self._task(row), False
        raise Conflict(f"idempotency key {idempotency_key!r} is in flux; retry")

    # --- consuming ----------------------------------------------------------------------------
    async def _claim_once(
        self,
        owner: str,
        lease_seconds: float,
        backend: str | None,
        targets: Collection[str] | None,
        fit: Fit | None = None,
    ) -> Task | None:
        params = {
            "owner": owner,
            "lease_seconds": lease_seconds,
            "backend": backend,
            "targets": self._targets(targets),
            "now": self._now(),
        }
        query = "claim"
        if fit is not None and (fit.have is not None or fit.warm is not None):
            query = "claim_placed"
            params.update(self._fit(fit), window=self.affinity_window)
        row = await self._claim_row(params, query)
        if row is None:
            return None
        task = self._task(row)
        self._changed([task])
        return task

    def _fit(self, fit: Fit) -> dict[str, Any]:
        """A claimer's `Fit` as query parameters: its files as one string, each between
        newlines (the claim searches it once per need), built once per set."""
        have = None
        if fit.have is not None:
            cached = self._have_encoded
            if cached is None or cached[0] is not fit.have:
                text = "\n" + "".join(f"{name}\n" for name in sorted(fit.have))
                cached = self._have_encoded = (fit.have, text)
            have = cached[1]
        return {"have": have, "warm": fit.warm, "placement_wait": self.placement_wait}

    async def _claim_row(self, params: dict[str, Any], query: str = "claim") -> Row | None:
        """Run the claim so that one committing after our cancellation (PostgreSQL may have
        committed before the cancel reached it) is handed back, not lost: shielded, and its
        result, should it come too late, goes to `_hand_back`."""
        claiming = asyncio.ensure_future(self._row(query, params))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            claiming.add_done_callback(self._hand_back_late)
            self._track(claiming)
            raise

    def _hand_back_late(self, claiming: asyncio.Future[Row | None]) -> None:
        if not claiming.cancelled() and claiming.exception() is None:
            self._hand_back(claiming.result())

    def _hand_back(self, row: Row | None) -> None:
        """A claim committed for a claimer that was cancelled meanwhile: put its task back to
        queued, the attempt uncounted, instead of leaving it running until the lease expires.
        In the background (the cancel is not held up); `close` waits for it."""
        if row is not None:
            self._track(asyncio.ensure_future(self._unclaim(row)))

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._handing_back.add(future)
        future.add_done_callback(self._handing_back.discard)

    async def _unclaim(self, row: Row) -> None:
        params = {"id": row["id"], "owner": row["lease_owner"], "attempts": row["attempts"]}
        try:
            back = await self._row("unclaim", params)
        except Exception as exc:
            log.warning("task %s: could not hand back a cancelled claim: %s", row["id"], exc)
            return
        if back is not None:
            self._changed([self._task(back)])

    async def _settle_hand_backs(self) -> None:
        """Let cancelled claims finish handing their tasks back (before closing)."""
        while self._handing_back:
            await asyncio.gather(*self._handing_back, return_exceptions=True)

    async def _next_run_at(
        self, targets: Collection[str] | None, fit: Fit | None = None
    ) -> datetime | None:
        params = {"targets": self._targets(targets)}
        query = "next_run_at"
        if fit is not None and (fit.have is not None or fit.warm is not None):
            query = "next_run_at_placed"
            params.update(self._fit(fit))
            del params["warm"]
        row = await self._row(query, params)
        return None if row is None else self._maybe(row["next_run_at"], self.time_out)

    async def heartbeat(
        self,
        task_id: str,
        owner: str,
        lease_seconds: float,
        progress: dict[str, Any] | None = None,
    ) -> HeartbeatAnswer:
        params = {
            "id": task_id,
            "owner": owner,
            "lease_seconds": lease_seconds,
            "progress": self._maybe(progress, self.json_in),
            "now": self._now(),
        }
        row = await self._row("heartbeat", params)
        if row is None:
            existing = await self._existing(task_id)
            return HeartbeatAnswer(True, bool(existing["cancel_requested"]), None)
        if progress is not None:
            self._progressed(task_id)
        expires = self.time_out(row["lease_expires_at"])
        return HeartbeatAnswer(False, bool(row["cancel_requested"]), expires)

    async def _finish(self, query: str, task_id: str, owner: str, **params: Any) -> Task:
        return await self._leased_change(query, task_id, owner, now=self._now(), **params)

    async def _leased_change(self, query: str, task_id: str, owner: str, **params: Any) -> Task:
        """Run a change that only the lease owner may make; anyone else gets `Conflict`."""
        params.update(id=task_id, owner=owner)
        row = await self._row(query, params)
        if row is None:
            existing = await self._existing(task_id)
            raise Conflict(
                f"task {task_id} is {existing['status']} and not leased to {owner}",
                task_id=task_id,
                status=existing["status"],
                lease_owner=existing["lease_owner"],
            )
        task = self._task(row)
        self._changed([task])
        return task

    async def complete(self, task_id: str, owner: str, result: dict[str, Any]) -> Task:
        return await self._finish(
            "complete",
            task_id,
            owner,
            result=self.json_in(result),
            progress=self.json_in(DONE_PROGRESS),
        )

    async def fail(
        self,
        task_id: str,
        owner: str,
        error: dict[str, Any],
        *,
        retryable: bool = False,
        backoff_seconds: float = 0.0,
        progress: dict[str, Any] | None = None,
    ) -> Task:
        return await self._finish(
            "fail",
            task_id,
            owner,
            error=self.json_in(error),
            retryable=retryable,
            backoff_seconds=backoff_seconds,
            progress=self._maybe(progress, self.json_in),
        )

    async def release(self, task_id: str, owner: str, attempt: int) -> Task:
        return await self._leased_change("unclaim", task_id, owner, attempts=attempt)

    async def cancel(self, task_id: str) -> Task:
        row = await self._row("cancel", {"id": task_id, "now": self._now()})
        if row is None:
            status = (await self._existing(task_id))["status"]
            raise Conflict(f"task {task_id} is already {status}", task_id=task_id, status=status)
        task = self._task(row)
        self._changed([task])
        return task

    async def expire_leases(self) -> builtins.list[Task]:
        params = {
            "now": self._now(),
            "timeout_error": self.json_in(TIMEOUT_ERROR),
            "lease_error": self.json_in(LEASE_ERROR),
        }
        tasks = [self._task(r) for r in await self._rows("expire_leases", params)]
        self._changed(tasks)
        return tasks

    async def purge(self, finished_before: datetime) -> int:
        rows = await self._rows("purge", {"before": self._when(finished_before)})
        return len(rows)

    # --- reading --------------------------------------------------------------------------------
    async def get(self, task_id: str) -> Task:
        row = await self._existing(task_id)
        rows = await self._rows("task_deliveries", {"id": task_id})
        return self._task(row, tuple(self._delivery(r) for r in rows))

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        priority: int | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"unknown status {status!r}", status=status)
        if limit < 1:
            raise InvalidRequest("limit must be at least 1", limit=limit)
        params = {
            "status": status,
            "priority": priority,
            "created_after": self._when(created_after),
            "created_before": self._when(created_before),
            "cursor": _cursor(cursor),
            "limit": limit + 1,
        }
        rows = await self._rows("list_tasks", params)
        tasks = [self._task(r) for r in rows[:limit]]
        more = len(rows) > limit
        return TaskPage(tasks, str(tasks[-1].seq) if more else None)

    async def position(self, task_id: str) -> int | None:
        row = await self._row("position", {"id": task_id})
        if row is None:
            raise NotFound(f"task {task_id} not found", task_id=task_id)
        return int(row["position"]) if row["status"] == "queued" else None

    async def stats(self) -> QueueStats:
        counts = dict.fromkeys(STATUSES, 0)
        depth: dict[int, int] = {}
        oldest = None
        for row in await self._rows("stats", {}):
            counts[row["status"]] += row["count"]
            if row["status"] == "queued":
                depth[row["priority"]] = row["count"]
                created = self.time_out(row["oldest"])
                oldest = created if oldest is None else min(oldest, created)
        age = None if oldest is None else max(0.0, (self.clock() - oldest).total_seconds())
        return QueueStats(counts, depth, age)

    async def queued_models(self) -> builtins.list[tuple[builtins.list[str] | None, int]]:
        rows = await self._rows("queued_models", {})
        return [(self._maybe(row["models"], self.json_out), int(row["count"])) for row in rows]

    # --- webhook outbox -----------------------------------------------------------------------

    async def due_webhooks(
        self, limit: int = 10, lease_seconds: float = 30.0
    ) -> builtins.list[WebhookDelivery]:
        params = {"limit": limit, "lease_seconds": lease_seconds, "now": self._now()}
        rows = await self._rows("due_webhooks", params)
        return sorted((self._delivery(r) for r in rows), key=lambda d: d.id)

    async def webhook_delivered(self, delivery_id: int) -> None:
        await self._outbox("webhook_delivered", {"id": delivery_id, "now": self._now()})

    async def webhook_failed(
        self, delivery_id: int, error: str, next_attempt_at: datetime | None
    ) -> None:
        next_at = self._when(next_attempt_at)
        await self._outbox(
            "webhook_failed", {"id": delivery_id, "error": error, "next_attempt_at": next_at}
        )

    async def _outbox(self, query: str, params: dict[str, Any]) -> None:
        if await self._row(query, params) is None:
            delivery_id = params["id"]
            raise NotFound(f"no pending webhook delivery {delivery_id}", delivery_id=delivery_id)


def _same_request(row: Row, key: str | None, fingerprint: str | None) -> None:
    """Conflict if the keyed task was submitted for another request (both fingerprints known:
    rows from before fingerprints, and callers that send none, are not compared)."""
    kept = row["request_fingerprint"]
    if fingerprint is not None and kept is not None and kept != fingerprint:
        raise Conflict(
            f"idempotency key {key!r} was already used for another request (task "
            f"{row['id']}); send that request again unchanged, or use a new key for this one",
            idempotency_key=key,
            task_id=row["id"],
        )


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise InvalidRequest(f"invalid cursor {cursor!r}", cursor=cursor) from None
