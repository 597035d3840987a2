"""``/api/v1/metrics`` (seed 004's queue and worker metrics as JSON) and ``/metrics``
(Prometheus text for scrapers and autoscalers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from comfyfleet.gateway.deps import GatewayDep, Reader
from comfyfleet.gateway.metrics import CONTENT_TYPE, pool_worker_counts
from comfyfleet.gateway.schemas import (
    ERROR_RESPONSES,
    ExpiredAgents,
    MetricsOut,
    QueueMetrics,
    WorkerMetrics,
)

router = APIRouter(tags=["metrics"], responses=ERROR_RESPONSES)


@router.get("/api/v1/metrics", response_model=MetricsOut, summary="Queue and worker metrics")
async def metrics_json(gateway: GatewayDep, _: Reader) -> MetricsOut:
    stats = await gateway.queue.stats()
    backends = gateway.backends()
    counts = stats.counts
    queue = QueueMetrics(
        pending_tasks=counts.get("queued", 0),
        running_tasks=counts.get("running", 0),
        completed_tasks=counts.get("succeeded", 0),
        failed_tasks=counts.get("failed", 0),
        cancelled_tasks=counts.get("cancelled", 0),
        depth_by_priority={str(p): n for p, n in sorted(stats.depth_by_priority.items())},
        oldest_queued_age_seconds=stats.oldest_queued_age,
    )
    return MetricsOut(
        queue=queue,
        workers=WorkerMetrics(**pool_worker_counts(backends, gateway.fleet.workers)),
        backends=backends,
        expired_agents=ExpiredAgents(**gateway.fleet.remotes.retired.as_dict()),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics_text(gateway: GatewayDep, _: Reader) -> Response:
    backends = gateway.backends()
    gateway.metrics.pools.manager = gateway.fleet.workers
    gateway.metrics.update(await gateway.queue.stats(), backends)
    gateway.metrics.totals.update(backends, gateway.fleet.remotes.retired.as_dict())
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)
