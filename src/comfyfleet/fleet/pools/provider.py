"""The one interface every worker provider implements (local processes, Docker, RunPod).

A provider knows how to start one worker from a `WorkerSpec`, stop it, say whether it is still
alive, hand over its logs, and list every worker it owns (found by labels, so a restarted
gateway adopts running workers instead of leaking them). Readiness is the pool's business: a
started worker is healthy once ``GET {url}/system_stats`` answers, see `wait_healthy`.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from comfyfleet.config import Settings
from comfyfleet.errors import ComfyFleetError
from comfyfleet.fleet.pools.spec import PoolSpec, PoolSpecError, WorkerSpec

# Labels every provider puts on what it starts (Docker labels, RunPod env/name, local state).
LABEL_POOL = "comfyfleet.pool"
LABEL_WORKER = "comfyfleet.worker"
LABEL_OWNER = "comfyfleet.owner"


class WorkerStartError(ComfyFleetError):
    """A worker could not be started."""

    code = "worker_start_failed"
    status = 503
    retryable = True


@dataclass
class WorkerHandle:
    """A started worker as its provider identifies it."""

    id: str
    pool: str
    url: str | None  # the ComfyUI base URL, once known
    ref: str  # provider's own id: pid, container id, pod id
    created_at: float = field(default_factory=time.time)  # wall clock
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    """What the provider sees of a worker, without asking ComfyUI."""

    alive: bool
    reason: str | None = None  # why it is not: "exited with code 86", "container OOMKilled"
    exit_code: int | None = None


class Provider(abc.ABC):
    kind: ClassVar[str]

    def __init__(
        self,
        pool: PoolSpec,
        *,
        owner: str = "comfyfleet",
        data_dir: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.data_dir = Path(data_dir or ".comfyfleet") / "workers" / pool.name
        self.settings = settings or Settings()

    def labels(self, spec: WorkerSpec) -> dict[str, str]:
        return {
            **spec.labels,
            LABEL_POOL: spec.pool,
            LABEL_WORKER: spec.worker_id,
            LABEL_OWNER: self.owner,
        }

    def option(self, key: str, default: str | None = None) -> str | None:
        return self.pool.options.get(key, default)

    def bad(self, message: str) -> PoolSpecError:
        return PoolSpecError(f"pool {self.pool.name!r} ({self.kind}): {message}")

    def env_option(self) -> dict[str, Any]:
        """The ``env=`` option of the container providers: a JSON object (none: ``{}``)."""
        try:
            env = json.loads(self.option("env") or "{}")
        except ValueError:
            raise self.bad("env must be a JSON object of strings") from None
        if not isinstance(env, dict):
            raise self.bad("env must be a JSON object of strings")
        return env

    def validate(self) -> None:  # noqa: B027 - most providers have nothing to check offline
        """Raise PoolSpecError (one line) for options that cannot work; no I/O, so
        ``comfyfleet serve`` runs it before anything starts."""

    def preflight(self) -> None:  # noqa: B027 - only some providers can ask before starting
        """Blocking checks that need I/O but no event loop (the Docker daemon answers, the
        image is there); PoolSpecError (one line). ``comfyfleet serve`` runs it at start."""

    async def check(self) -> None:
        """`validate` and `preflight`, from the event loop (the manager's start)."""
        self.validate()
        await asyncio.to_thread(self.preflight)

    @abc.abstractmethod
    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Launch one worker; return as soon as it is launched (not yet healthy)."""

    @abc.abstractmethod
    async def stop(self, handle: WorkerHandle) -> None:
        """Stop and remove the worker; idempotent."""

    @abc.abstractmethod
    async def list_owned(self) -> list[WorkerHandle]:
        """Every live worker of this pool and owner, including ones another process started."""

    @abc.abstractmethod
    async def health(self, handle: WorkerHandle) -> Health:
        """Is the worker still there (process, container, pod)?"""

    async def logs(self, handle: WorkerHandle, tail: int = 100) -> str:
        """The worker's last output lines, kept for failed workers' reports."""
        return ""

    async def resolve_url(self, handle: WorkerHandle) -> str | None:
        """The worker's URL once the provider knows it (pods learn their address late)."""
        return handle.url

    async def close(self) -> None:  # noqa: B027
        """Release clients; running workers are left alone."""

    # --- readiness ----------------------------------------------------------------------------
    async def wait_healthy(self, handle: WorkerHandle, timeout: float) -> str:
        """Wait until ComfyUI answers on the worker's URL; returns that URL. Probes back off
        from 5 ms to 0.25 s (a refused connect costs nothing) and stop at once when the
        provider says the worker is gone. Raises WorkerStartError with the reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = 0.005
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            while True:
                url = handle.url or await self.resolve_url(handle)
                if url:
                    handle.url = url
                    try:
                        response = await http.get(f"{url}/system_stats")
                        if response.status_code == 200:
                            return url
                    except httpx.HTTPError:
                        pass
                health = await self.health(handle)
                if not health.alive:
                    raise WorkerStartError(
                        f"worker {handle.id} died while starting: {health.reason}",
                        worker=handle.id,
                        exit_code=health.exit_code,
                    )
                if loop.time() >= deadline:
                    raise WorkerStartError(
                        f"worker {handle.id} not healthy after {timeout:.0f} s",
                        worker=handle.id,
                        reason="health_timeout",
                    )
                await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))
                interval = min(interval * 1.5, 0.25)


def make_provider(pool: PoolSpec, **context: Any) -> Provider:
    """The provider for ``pool.provider``; imports only that one (docker/runpod SDKs are heavy)."""
    if pool.provider == "local":
        from comfyfleet.fleet.pools.local import LocalProvider

        return LocalProvider(pool, **context)
    if pool.provider == "docker":
        from comfyfleet.fleet.pools.docker import DockerProvider

        return DockerProvider(pool, **context)
    if pool.provider == "runpod":
        from comfyfleet.fleet.pools.runpod import RunPodProvider

        return RunPodProvider(pool, **context)
    raise PoolSpecError(f"pool {pool.name!r}: unknown provider {pool.provider!r}")
