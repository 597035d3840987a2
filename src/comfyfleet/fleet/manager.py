"""`Fleet`: the gateway's dispatch layer. It builds one agent per configured backend (a local
agent per ComfyUI URL, a RunPod executor when an endpoint is set), keeps a registry of remote
pull agents as they call in, and runs the lease reaper.

Local agents share one `JobModels`: the files a job asks for (``JobSpec.models``) go under the
gateway's model root (``COMFYFLEET_MODEL_CACHE_ROOT``, the model roots, ``COMFYUI_DIR/models``),
which the local ComfyUIs must read their models from.

The reaper (``queue.expire_leases()`` every few seconds) is maintenance, not dispatch: tasks
start through wake-ups, and a requeue by the reaper is itself a wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.config import Settings
from comfyfleet.errors import NotFound
from comfyfleet.fleet.agent import Agent
from comfyfleet.fleet.backend import LOCAL_HEALTH_BACKOFF, Backend, Backoff
from comfyfleet.fleet.events import TaskEvents
from comfyfleet.fleet.folders import BackendFolders
from comfyfleet.fleet.local import ComfyRunner, QueueSource, SinkFactory, status_event
from comfyfleet.fleet.registry import RemoteAgents, consistent
from comfyfleet.queue.base import Queue, Task

log = logging.getLogger(__name__)

# A local backend's finished prompts are removed from ComfyUI's history this many at a time.
HISTORY_BATCH = 32


def parse_backend(entry: str) -> tuple[str, str]:
    """``"name=http://host:port"`` or a bare URL (named ``host:port``)."""
    name, sep, url = entry.partition("=")
    if sep and "://" not in name:
        return name.strip(), url.strip()
    parts = urlsplit(entry)
    return (parts.netloc or entry), entry


def replica_id() -> str:
    """Distinguishes this process's lease owners from every other replica's (and restart's)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Fleet:
    """Who executes queued tasks. ``await fleet.start()`` in the gateway's lifespan."""

    def __init__(
        self,
        settings: Settings,
        queue: Queue,
        *,
        sink_for: SinkFactory | None = None,
        events: TaskEvents | None = None,
        retry_backoff: Backoff | None = None,
        reap_interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.events = events or TaskEvents()
        self.replica = replica_id()
        self.retry_backoff = retry_backoff or Backoff(
            initial=settings.retry_backoff, maximum=max(60.0, settings.retry_backoff)
        )
        self.reap_interval = reap_interval or min(max(settings.lease_seconds / 3, 0.05), 5.0)
        self._sink_for = sink_for
        from comfyfleet.models.jobmodels import JobModels  # aiohttp: not at import time

        self.models = JobModels(settings, who="gateway")
        self.agents: dict[str, Agent] = {}
        self.remotes = RemoteAgents(  # remote agents, forgotten when they stop calling in
            offline_after=max(2 * settings.lease_seconds, 75.0),
            expire_after=settings.agent_expiry_seconds,
        )
        self.folders: dict[str, BackendFolders] = {}  # local backends' ComfyUI folders
        self._closers: list[Any] = []
        self._reaper: asyncio.Task[None] | None = None
        self.workers: Any = None  # the worker manager (fleet.pools) when pools are configured

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        for entry in self.settings.backends:
            name, url = parse_backend(entry)
            self._add(self._local_agent(name, url))
        if self.settings.runpod_endpoint:
            self._add(self._runpod_agent())
        self._reaper = asyncio.create_task(self._reap(), name="fleet:reaper")
        if getattr(self.settings, "pools", None):
            from comfyfleet.fleet.pools import WorkerManager

            self.workers = WorkerManager.from_settings(self)
            await self.workers.start()
        log.info("fleet started: %s", ", ".join(self.agents) or "no local backends")

    async def stop(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(agent.stop() for agent in self.agents.values()))
        for close in [*self._closers, self.models.close]:
            with contextlib.suppress(Exception):
                await close()
        self._closers.clear()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _add(self, agent: Agent) -> None:
        if agent.backend.name in self.agents:
            raise ValueError(f"two backends are named {agent.backend.name!r}")
        self.agents[agent.backend.name] = agent
        agent.start()

    # --- backends that come and go (the worker manager's pools) -------------------------------
    def add_backend(self, name: str, url: str, labels: dict[str, str] | None = None) -> Backend:
        """Feed one more ComfyUI with a local agent, now; returns its `Backend` (whose
        ``running``/``delivering`` sets are the busy/idle view)."""
        agent = self._local_agent(name, url)
        agent.backend.labels = dict(labels or {})  # type: ignore[attr-defined]
        self._add(agent)
        return agent.backend

    async def remove_backend(self, name: str) -> None:
        """Stop feeding a backend added with `add_backend`: its agent stops (a running task is
        interrupted and handed straight back to the queue) and its client is closed."""
        agent = self.agents.pop(name, None)
        if agent is None:
            raise NotFound(f"no backend named {name!r}", backend=name)
        await agent.stop()
        client = getattr(agent.runner, "client", None)
        if client is not None:
            with contextlib.suppress(ValueError):
                self._closers.remove(client.close)
            with contextlib.suppress(Exception):
                await client.close()

    def sink_for(self, task_id: str) -> Any:
        """The artifacts sink for a task (the gateway's store unless one was injected)."""
        if self._sink_for is None:
            from comfyfleet.outputs.artifacts import ArtifactStore

            self._sink_for = ArtifactStore.from_settings(self.settings).sink
        return self._sink_for(task_id)

    def _source(self, name: str, runner: Any = None) -> QueueSource:
        """A local queue source; one for a runner with a catalogue claims model-aware."""
        catalogue = getattr(runner, "catalogue", None)
        return QueueSource(
            self.queue,
            owner=f"{name}@{self.replica}",
            backend=name,
            lease_seconds=self.settings.lease_seconds,
            job_timeout=self.settings.job_timeout,
            events=self.events,
            catalogue=catalogue if callable(catalogue) else None,
        )

    def _agent(self, backend: Backend, runner: Any) -> Agent:
        return Agent(
            backend,
            self._source(backend.name, runner),
            runner,
            retry_backoff=self.retry_backoff,
        )

    def _local_agent(self, name: str, url: str) -> Agent:
        from comfyfleet.comfy.client import Client

        client = Client(url, history_batch=HISTORY_BATCH)
        self._closers.append(client.close)
        folders = self.folders[name] = BackendFolders.for_backend(self.settings, name, url)
        runner = ComfyRunner(
            folders.tally(client),
            self.sink_for,
            templates_dir=self.settings.templates_dir,
            input_dir=folders.input,
            output_dir=folders.output,
            settings=self.settings,
            models=self.models,
        )
        folders.follow(runner)
        backend = Backend(
            name,
            kind="local",
            url=url,
            check=folders.checked(runner.health, client),
            depth=self.settings.prefetch_depth,
            backoff=LOCAL_HEALTH_BACKOFF,
        )
        # A closed websocket plus refused connections: down now, not after a timeout.
        client.on_down = lambda reason: backend.mark_unhealthy(reason)
        return self._agent(backend, runner)

    def _runpod_agent(self) -> Agent:
        from comfyfleet.fleet.runpod import RunPodRunner

        runner = RunPodRunner.from_settings(self.settings, self.sink_for)
        self._closers.append(runner.close)
        backend = Backend(
            runner.name,
            kind="runpod",
            url=runner.base_url,
            check=runner.health,
            capacity=self.settings.runpod_concurrency,
        )
        return self._agent(backend, runner)

    # --- operator view ------------------------------------------------------------------------
    def backends(self) -> list[dict[str, Any]]:
        """Every backend this replica knows, with state (idle, busy, unhealthy, draining,
        drained, offline, stopped), load and counters."""
        out = [agent.backend.snapshot() for agent in self.agents.values()]
        for snap in out:
            if snap["name"] in self.folders:
                snap.update(self.folders[snap["name"]].snapshot())
        return [*map(consistent, out), *self.remotes.snapshots()]

    def catalogues(self) -> list[dict[str, Any]]:
        """The object_info of every local backend whose catalogue is already fetched (never a
        request: submits must not wait on a backend). Remote agents and RunPod have none."""
        out = []
        for agent in self.agents.values():
            catalogue = getattr(agent.runner, "catalogue", None)
            info = catalogue() if callable(catalogue) else None
            if info is not None:
                out.append(info)
        return out

    def backend(self, name: str) -> Backend:
        if name in self.agents:
            return self.agents[name].backend
        if name in self.remotes:
            return self.remotes[name]
        raise NotFound(f"no backend named {name!r}", backend=name)

    def drain(self, name: str) -> dict[str, Any]:
        """Finish the current task(s), claim no more."""
        backend = self.backend(name)
        backend.drain()
        return self._snapshot(backend)

    def undrain(self, name: str) -> dict[str, Any]:
        backend = self.backend(name)
        backend.undrain()
        return self._snapshot(backend)

    def _snapshot(self, backend: Backend) -> dict[str, Any]:
        offline = backend.kind == "remote" and self.remotes.offline(backend)
        return consistent(backend.snapshot(), offline=offline)

    def remote(self, name: str) -> Backend:
        """The registry entry of a remote agent, created by its claim (its first call)."""
        if name in self.agents:
            raise NotFound(f"{name!r} is a local backend, not a remote agent", backend=name)
        return self.remotes.touch(name)

    def known_remote(self, name: str) -> Backend | None:
        """The entry of an agent that claimed before (marked seen), else None: a report for a
        task it does not hold must not register a phantom worker."""
        return self.remotes.seen(name)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a task: queued ones at once; a running one is interrupted right away when it
        runs here, else by its agent's next heartbeat."""
        task = await self.queue.cancel(task_id)
        for agent in self.agents.values():
            agent.cancel(task_id)
        if task.finished:
            self.events.publish(task_id, status_event(task))
        return task

    # --- maintenance --------------------------------------------------------------------------
    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            self.remotes.prune()
            try:
                changed = await self.queue.expire_leases()
            except Exception:
                log.exception("expiring leases failed")
                continue
            for task in changed:
                log.warning(
                    "task %s: lease expired on %s -> %s", task.id, task.backend, task.status
                )
                remote = self.remotes.get(task.backend or "")
                if remote is not None and task.id in remote.running:
                    remote.finished(task.id, ok=False)
                self.events.publish(task.id, status_event(task, reason="lease_expired"))
