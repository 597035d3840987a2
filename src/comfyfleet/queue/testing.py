"""Helpers for tests that drive a queue (ours and the gateway's): a movable clock, and spies
that tell a test when a waiter is really waiting, so a wake-up is proven rather than lucky."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any


class FakeClock:
    """The queues' notion of now; tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def spy_before_wait(q: Any) -> asyncio.Event:
    """An event set when ``claim(wait=...)`` found nothing and is about to wait, so a test
    can submit only once the claimer is really waiting (proving the wake-up, not luck)."""
    waiting = asyncio.Event()
    original = q._next_run_at

    async def next_run_at(*args: Any) -> Any:
        value = await original(*args)
        waiting.set()
        return value

    q._next_run_at = next_run_at
    return waiting


def spy_after_get(q: Any) -> asyncio.Event:
    """An event set after the first ``get`` (wait_finished/watch look, then wait)."""
    looked = asyncio.Event()
    original = q.get

    async def get(task_id: str) -> Any:
        value = await original(task_id)
        looked.set()
        return value

    q.get = get
    return looked
