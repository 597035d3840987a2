"""Queue records as clients see them: `Task` → `TaskOut`, with absolute URLs and timings."""

from __future__ import annotations

from typing import Any

from comfyfleet.gateway.schemas import Delivery, TaskOut, WebhookInfo
from comfyfleet.queue import Task, WebhookDelivery


def delivery_state(delivery: WebhookDelivery) -> str:
    if delivery.delivered_at is not None:
        return "delivered"
    return "pending" if delivery.next_attempt_at is not None else "failed"


def absolute(url: str, base_url: str) -> str:
    """Gateway-relative URLs (``/api/...``) made absolute; others unchanged."""
    return base_url.rstrip("/") + url if url.startswith("/") else url


def result_out(result: dict[str, Any] | None, base_url: str) -> dict[str, Any] | None:
    if not result or not isinstance(result.get("artifacts"), list):
        return result
    artifacts = []
    for artifact in result["artifacts"]:
        if isinstance(artifact, dict) and isinstance(artifact.get("url"), str):
            artifact = {**artifact, "url": absolute(artifact["url"], base_url)}
        artifacts.append(artifact)
    return {**result, "artifacts": artifacts}


def timings(task: Task) -> dict[str, float]:
    """Seconds waiting in the queue, running (last attempt) and in total, then the pipeline's
    own stages from the result."""
    out: dict[str, float] = {}
    if task.started_at:
        out["queued_seconds"] = (task.started_at - task.created_at).total_seconds()
        if task.finished_at:
            out["run_seconds"] = (task.finished_at - task.started_at).total_seconds()
    if task.finished_at:
        out["total_seconds"] = (task.finished_at - task.created_at).total_seconds()
    stages = (task.result or {}).get("timings")
    if isinstance(stages, dict):
        out.update({k: float(v) for k, v in stages.items() if isinstance(v, int | float)})
    return {k: round(v, 4) for k, v in out.items()}


def task_links(task_id: str, base_url: str) -> dict[str, str]:
    root = f"{base_url.rstrip('/')}/api/v1/tasks/{task_id}"
    return {"self": root, "events": f"{root}/events", "cancel": f"{root}/cancel"}


def task_out(task: Task, base_url: str, *, position: int | None = None) -> TaskOut:
    payload = task.payload if isinstance(task.payload, dict) else {}
    webhook = None
    if task.webhook_url:
        webhook = WebhookInfo(
            url=task.webhook_url,
            deliveries=[
                Delivery(
                    id=d.id,
                    state=delivery_state(d),  # type: ignore[arg-type]
                    attempts=d.attempts,
                    created_at=d.created_at,
                    delivered_at=d.delivered_at,
                    next_attempt_at=d.next_attempt_at,
                    last_error=d.last_error,
                )
                for d in task.deliveries
            ],
        )
    return TaskOut(
        id=task.id,
        status=task.status,
        priority=task.priority,
        workflow_id=payload.get("workflow_id"),
        source=payload.get("source"),
        position=position,
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        backend=task.backend,
        cancel_requested=task.cancel_requested,
        progress=task.progress,
        created_at=task.created_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        timings=timings(task),
        result=result_out(task.result, base_url),
        error=task.error,
        webhook=webhook,
        links=task_links(task.id, base_url),
    )
