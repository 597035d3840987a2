"""The worker manager: pools of identical workers from one provider (local processes, Docker
containers, RunPod pods), scaled on the queue by `WorkerManager`. See docs/fleet.md,
"Worker pools"."""

from comfyfleet.fleet.pools.autoscaler import WorkerManager
from comfyfleet.fleet.pools.pool import Pool, Worker
from comfyfleet.fleet.pools.provider import Health, Provider, WorkerHandle, WorkerStartError
from comfyfleet.fleet.pools.spec import PoolSpec, PoolSpecError, WorkerSpec, parse_pool, parse_pools

__all__ = [
    "Health",
    "Pool",
    "PoolSpec",
    "PoolSpecError",
    "Provider",
    "Worker",
    "WorkerHandle",
    "WorkerManager",
    "WorkerSpec",
    "WorkerStartError",
    "parse_pool",
    "parse_pools",
]
