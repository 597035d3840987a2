"""Rows to records. Each engine passes how it stores times and JSON; the shape is shared."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from comfyfleet.queue.base import Task, WebhookDelivery

Convert = Callable[[Any], Any]

_TIMES = (
    "run_at",
    "deadline_at",
    "lease_expires_at",
    "created_at",
    "started_at",
    "finished_at",
)
_JSON = ("payload", "progress", "result", "error", "models")
_TASK_FIELDS = tuple(name for name in Task.__dataclass_fields__ if name != "deliveries")


def task_from_row(
    row: Mapping[str, Any],
    *,
    time: Convert,
    json: Convert,
    deliveries: tuple[WebhookDelivery, ...] = (),
) -> Task:
    values = {name: row[name] for name in _TASK_FIELDS}
    for name in _TIMES:
        values[name] = time(values[name])
    for name in _JSON:
        values[name] = json(values[name])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Task(**values, deliveries=deliveries)


def delivery_from_row(row: Mapping[str, Any], *, time: Convert, json: Convert) -> WebhookDelivery:
    values = {name: row[name] for name in WebhookDelivery.__dataclass_fields__}
    for name in ("next_attempt_at", "delivered_at", "created_at"):
        values[name] = time(values[name])
    values["body"] = json(values["body"])
    return WebhookDelivery(**values)
