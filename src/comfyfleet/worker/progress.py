"""Forwarding ComfyUI's progress to RunPod, throttled.

``runpod.serverless.progress_update`` starts a thread and an HTTP POST per call, and a sampler
reports every step; so a report goes out when the stage or node changes, when a node finishes
its steps, or when ``min_interval`` has passed since the last one — never more often.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from comfyfleet.jobs import Progress

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any], dict[str, Any]], None]


def payload(report: Progress) -> dict[str, Any]:
    """What a RunPod ``/status`` caller sees while the job is IN_PROGRESS."""
    body: dict[str, Any] = {
        "stage": report.stage,
        "node": report.node,
        "class_type": report.class_type,
        "step": report.value,
        "steps": report.max,
        "percent": report.percent,
        "message": report.message,
    }
    return {k: v for k, v in body.items() if v is not None}


class Reporter:
    """The ``on_progress`` callback of one job."""

    def __init__(self, job: dict[str, Any], send: Send, *, min_interval: float = 0.5) -> None:
        self.job = job
        self.send = send
        self.min_interval = min_interval
        self.sent = 0
        self._last_key: tuple[str, str | None] | None = None
        self._last_at = float("-inf")

    def __call__(self, report: Progress) -> None:
        now = time.monotonic()
        key = (report.stage, report.node)
        finished_node = report.value is not None and report.value == report.max
        if key == self._last_key and not finished_node and now - self._last_at < self.min_interval:
            return
        self._last_key, self._last_at = key, now
        body = payload(report)
        self.sent += 1
        log.info("progress", extra={"progress": body})
        try:
            self.send(self.job, body)
        except Exception:  # progress is best effort; it must never fail the job
            log.exception("progress update failed")
