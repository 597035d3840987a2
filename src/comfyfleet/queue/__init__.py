"""Durable job queue: one contract (`base.Queue`), two engines (SQLite, PostgreSQL).

``open_queue(url_or_path)`` picks the engine: ``postgresql://...`` (or ``postgres://``) gives
`PostgresQueue`; ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``sqlite://`` (in memory)
or a plain path gives `SqliteQueue` (one process per file: wake-ups are in-process).
The queue is not connected yet: ``async with open_queue(url) as q`` (or ``await q.open()``)
connects and applies migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyfleet.queue.base import (
    FINISHED,
    STATUSES,
    Fit,
    HeartbeatAnswer,
    Queue,
    QueueStats,
    Task,
    TaskPage,
    TaskStatus,
    WebhookDelivery,
)

__all__ = [
    "FINISHED",
    "STATUSES",
    "Fit",
    "HeartbeatAnswer",
    "Queue",
    "QueueStats",
    "Task",
    "TaskPage",
    "TaskStatus",
    "WebhookDelivery",
    "open_queue",
]


def open_queue(url_or_path: str | Path, **options: Any) -> Queue:
    """The engine for ``url_or_path``; ``options`` go to its constructor (schema, clock...)."""
    target = str(url_or_path)
    if target.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from comfyfleet.queue.postgres import PostgresQueue

        return PostgresQueue(target.replace("postgresql+psycopg://", "postgresql://"), **options)
    from comfyfleet.queue.sqlite import SqliteQueue

    if target.startswith("sqlite://"):
        # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////abs/path.db, sqlite://
        target = target.removeprefix("sqlite://").removeprefix("/") or ":memory:"
    return SqliteQueue(target, **options)
