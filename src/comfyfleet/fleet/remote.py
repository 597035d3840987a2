"""The remote pull agent (``comfyfleet agent``): runs next to a ComfyUI anywhere and talks to the
gateway over outbound HTTP only, so a GPU box behind NAT can join the fleet.

It long-polls ``POST /api/v1/agent/claim?wait=S`` (the gateway answers the moment a task is
claimable), heartbeats with progress while the task runs, streams each artifact with
``PUT .../artifacts/{name}`` into the gateway's store, then completes or fails the task. The loop,
health checks and failure semantics are the same `Agent` the gateway runs for local backends.
A gateway that is down or restarting is retried with backoff; nothing is lost meanwhile: a task
whose heartbeats stop comes back through the gateway's lease expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from comfyfleet.config import Settings
from comfyfleet.errors import ComfyFleetError, Conflict, StorageError
from comfyfleet.fleet.agent import Agent, Lease, Verdict
from comfyfleet.fleet.backend import Backend, Backoff
from comfyfleet.fleet.local import ComfyRunner
from comfyfleet.jobs import Artifact
from comfyfleet.models.jobmodels import JobModels

log = logging.getLogger(__name__)

API = "/api/v1/agent"
# How long a finished task's report is retried while the gateway is unreachable.
REPORT_PATIENCE = 300.0


class GatewayError(ComfyFleetError):
    """The gateway could not be reached or refused the call."""

    code = "gateway_unavailable"
    status = 503
    retryable = True


class GatewayClient:
    """The agent protocol's HTTP calls, with reconnect-and-retry where it is safe."""

    def __init__(self, url: str, token: str | None, *, agent_id: str, name: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(30.0, connect=10.0)
        )
        self.agent_id = agent_id
        self.name = name
        self.backoff = Backoff(initial=0.2, maximum=10.0)

    async def close(self) -> None:
        await self.http.aclose()

    def ident(self, **extra: Any) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "name": self.name, **extra}

    async def call(
        self, path: str, body: dict[str, Any], *, timeout: float | None = None, **params: Any
    ) -> httpx.Response:
        """One POST; transport failures become GatewayError, HTTP errors our errors."""
        try:
            kw: dict[str, Any] = {"params": params} if params else {}
            if timeout is not None:
                kw["timeout"] = httpx.Timeout(timeout, connect=10.0)
            resp = await self.http.post(API + path, json=body, **kw)
        except httpx.HTTPError as exc:
            raise GatewayError(f"gateway unreachable: {exc!r}") from exc
        if resp.status_code == 409:
            raise Conflict(_message(resp))
        if resp.status_code >= 400:
            error = GatewayError(f"gateway answered HTTP {resp.status_code}: {_message(resp)}")
            if resp.status_code in (400, 401, 403, 404, 422):
                error.retryable = False  # type: ignore[misc]
            raise error
        return resp

    async def persist(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """Like `call`, retried while the gateway is unreachable (a report must arrive)."""
        give_up = time.monotonic() + REPORT_PATIENCE
        failures = 0
        while True:
            try:
                return await self.call(path, body)
            except GatewayError as exc:
                failures += 1
                if not exc.retryable or time.monotonic() > give_up:
                    raise
                log.warning("%s failed (%s); retrying", path, exc)
                await asyncio.sleep(self.backoff.delay(failures))


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(body.get("detail", error))
    return str(body)[:300]


class GatewaySource:
    """`TaskSource` over the gateway's agent API."""

    def __init__(self, gateway: GatewayClient, *, lease_seconds: float = 30.0) -> None:
        self.gateway = gateway
        self.lease_seconds = lease_seconds  # updated from each claim
        self._failures = 0  # consecutive failed claims: back off while the gateway is away
        # Each task's latest step not yet carried by a heartbeat (heartbeats are rate-limited):
        # a failure sends it first, so the task reads the stage the attempt stopped in.
        self._unsent: dict[str, dict[str, Any]] = {}

    async def claim(self, wait: float) -> Lease | None:
        try:
            resp = await self.gateway.call(
                "/claim", self.gateway.ident(), timeout=wait + 15.0, wait=wait
            )
        except GatewayError as exc:
            if not exc.retryable:
                raise
            self._failures += 1
            log.warning("claim failed (%s); retrying", exc)
            await asyncio.sleep(self.gateway.backoff.delay(self._failures))
            return None
        self._failures = 0
        if resp.status_code == 204 or not resp.content:
            return None
        body = resp.json()
        self.lease_seconds = float(body.get("lease_seconds", self.lease_seconds))
        return Lease(
            task_id=body["task_id"],
            payload=body["payload"],
            attempt=int(body.get("attempt", 1)),
            max_attempts=int(body.get("max_attempts", 1)),
            deadline=asyncio.get_running_loop().time() + float(body["seconds_left"]),
        )

    async def heartbeat(self, lease: Lease, progress: dict[str, Any] | None) -> Verdict:
        if progress is not None and progress == self._unsent.get(lease.task_id):
            del self._unsent[lease.task_id]
        path = f"/tasks/{quote(lease.task_id, safe='')}/heartbeat"
        try:
            resp = await self.gateway.call(path, self.gateway.ident(progress=progress))
        except Conflict:
            self._unsent.pop(lease.task_id, None)
            return Verdict(lease_lost=True)
        body = resp.json()
        if body.get("lease_lost"):
            self._unsent.pop(lease.task_id, None)
        return Verdict(
            lease_lost=bool(body.get("lease_lost")),
            cancel_requested=bool(body.get("cancel_requested")),
        )

    async def complete(self, lease: Lease, result: dict[str, Any]) -> None:
        self._unsent.pop(lease.task_id, None)
        path = f"/tasks/{quote(lease.task_id, safe='')}/complete"
        await self.gateway.persist(path, self.gateway.ident(result=result))

    async def fail(
        self, lease: Lease, error: dict[str, Any], *, retryable: bool, backoff: float
    ) -> None:
        last = self._unsent.pop(lease.task_id, None)
        if last is not None:  # best effort, through the heartbeat every gateway version knows
            with contextlib.suppress(Exception):
                await self.heartbeat(lease, last)
        path = f"/tasks/{quote(lease.task_id, safe='')}/fail"
        body = self.gateway.ident(error=error, retryable=retryable, backoff=backoff)
        await self.gateway.persist(path, body)

    def progress(self, lease: Lease, progress: dict[str, Any]) -> None:
        """Progress travels with the next heartbeat (the agent heartbeats sooner on it)."""
        self._unsent[lease.task_id] = progress


class UploadSink:
    """A `Sink` that streams each artifact to the gateway's store for one task."""

    def __init__(self, gateway: GatewayClient, task_id: str) -> None:
        self.gateway = gateway
        self.task_id = task_id

    async def store(self, artifact: Artifact, chunks: AsyncIterator[bytes]) -> Artifact:
        name = quote(artifact.filename.replace("/", "_"), safe="") or "artifact"
        path = f"{API}/tasks/{quote(self.task_id, safe='')}/artifacts/{name}"
        meta = artifact.model_dump(mode="json", include={"node_id", "subfolder", "type", "kind"})
        params = {k: v for k, v in meta.items() if v is not None}
        params.update(agent_id=self.gateway.agent_id, agent_name=self.gateway.name)
        try:
            resp = await self.gateway.http.put(
                path,
                params=params,
                content=chunks,
                headers={"Content-Type": artifact.media_type},
                timeout=httpx.Timeout(None, connect=10.0),
            )
        except httpx.HTTPError as exc:
            raise StorageError(f"uploading {artifact.filename} failed: {exc!r}") from exc
        if resp.status_code == 409:
            raise Conflict(_message(resp))
        if resp.status_code >= 400:
            error = StorageError(
                f"gateway refused artifact {artifact.filename}: HTTP {resp.status_code} "
                f"{_message(resp)}"
            )
            if resp.status_code < 500 and resp.status_code != 429:
                error.retryable = False  # type: ignore[misc]  # our request is wrong
            raise error
        stored = Artifact.model_validate(resp.json())
        return stored.model_copy(update={"text": artifact.text}) if artifact.text else stored


def default_name(comfy_url: str) -> str:
    return urlsplit(comfy_url).netloc or comfy_url


async def run_agent(
    gateway_url: str,
    comfy_url: str,
    *,
    token: str | None = None,
    name: str | None = None,
    settings: Settings | None = None,
    templates_dir: Path | None = None,
    input_dir: Path | None = None,
    output_dir: Path | None = None,
    claim_wait: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a remote agent until ``stop`` is set (or SIGTERM/SIGINT: finish, then exit)."""
    from comfyfleet.comfy.client import Client

    settings = settings or Settings()
    name = name or default_name(comfy_url)
    gateway = GatewayClient(gateway_url, token, agent_id=uuid.uuid4().hex, name=name)
    client = Client(comfy_url)
    models = JobModels(settings, who="agent")  # JobSpec.models go under this machine's root
    runner = ComfyRunner(
        client,
        lambda task_id: UploadSink(gateway, task_id),
        templates_dir=templates_dir or settings.templates_dir,
        input_dir=input_dir,
        output_dir=output_dir,
        settings=settings,
        models=models,
    )
    backend = Backend(name, kind="remote", url=comfy_url, check=runner.health)
    agent = Agent(
        backend,
        GatewaySource(gateway),
        runner,
        retry_backoff=Backoff(initial=settings.retry_backoff, maximum=60.0),
        claim_wait=claim_wait,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info("agent %s: ComfyUI %s -> gateway %s", name, comfy_url, gateway_url)
    agent.start()
    try:
        await stop.wait()
        log.info("agent %s: draining (finishing %d task(s))", name, len(agent.running))
        backend.drain()
        while agent.running:
            await backend.changed()
    finally:
        await agent.stop()
        await models.close()
        await client.close()
        await gateway.close()
