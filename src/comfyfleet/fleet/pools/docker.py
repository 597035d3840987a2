"""``docker``: containers on a Docker Engine, through the ``docker`` SDK (``DOCKER_HOST`` or the
local socket), called in threads because the SDK is synchronous.

Each worker is a container of the pool's ``image`` (optionally ``command``), labelled with its
pool, worker id and owner (that is how `list_owned` adopts them), with:

- ``gpus``: ``all`` (every GPU to every worker) or ``N`` (worker slot k gets GPU k mod N) as a
  device request for the NVIDIA runtime;
- ``volumes``: ``host:container[:mode]`` entries (space-separated or a JSON list), read-only
  unless the mode says ``rw`` — model volumes are shared, never written by a worker;
- ``port`` (ComfyUI's port in the container, default 8188) published on 127.0.0.1 at a port
  Docker picks, or ``network=host`` (the worker gets a free port, ``{port}`` in ``command``);
- ``env``: a JSON object.

A container that exits is kept until its logs are read (the pool keeps them for failed
workers), then removed; Docker's own health status, when the image defines a HEALTHCHECK,
counts too.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from datetime import UTC, datetime
from typing import Any

from comfyfleet.fleet.pools.local import free_port
from comfyfleet.fleet.pools.provider import (
    LABEL_OWNER,
    LABEL_POOL,
    LABEL_WORKER,
    Health,
    Provider,
    WorkerHandle,
    WorkerStartError,
)
from comfyfleet.fleet.pools.spec import WorkerSpec


def parse_volumes(text: str | None) -> dict[str, dict[str, str]]:
    """``/models:/comfyui/models`` (read-only) or ``/cache:/cache:rw`` entries."""
    if not text:
        return {}
    entries = json.loads(text) if text.strip().startswith("[") else text.split()
    volumes: dict[str, dict[str, str]] = {}
    for entry in entries:
        parts = str(entry).split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError(f"volume {entry!r} is not host:container[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "ro"
        if mode not in ("ro", "rw"):
            raise ValueError(f"volume {entry!r}: mode must be ro or rw")
        volumes[parts[0]] = {"bind": parts[1], "mode": mode}
    return volumes


class DockerProvider(Provider):
    kind = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None

    @property
    def port(self) -> int:
        return int(self.option("port", "8188") or 8188)

    @property
    def host_network(self) -> bool:
        return self.option("network") == "host"

    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env()
        return self._client

    def validate(self) -> None:
        if not self.option("image"):
            raise self.bad("needs image=... (built or imported on the Docker host)")
        try:
            parse_volumes(self.option("volumes"))
        except ValueError as exc:
            raise self.bad(str(exc)) from None
        gpus = self.option("gpus")
        if gpus is not None and gpus != "all" and not gpus.isdigit():
            raise self.bad(f"gpus={gpus!r} must be all or a number of GPUs")
        self.env_option()

    def preflight(self) -> None:
        import docker.errors

        image = self.option("image")
        try:
            client = self.client()
            client.ping()
        except Exception as exc:
            raise self.bad(f"the Docker daemon does not answer: {exc}") from None
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise self.bad(
                f"image {image!r} is not on the Docker host (docker pull, build or import it)"
            ) from None

    def _name(self, worker_id: str) -> str:
        return f"comfyfleet-{self.owner}-{self.pool.name}-{worker_id}"

    def _device_requests(self, spec: WorkerSpec) -> list[Any] | None:
        gpus = self.option("gpus")
        if not gpus or gpus == "0":
            return None
        from docker.types import DeviceRequest

        if gpus == "all":
            return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return [DeviceRequest(device_ids=[str(spec.slot % int(gpus))], capabilities=[["gpu"]])]

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        labels = self.labels(spec)
        port = free_port() if self.host_network else self.port
        command = self.option("command")
        env = {**self.env_option(), **spec.env, "COMFYFLEET_PORT": str(port)}
        options: dict[str, Any] = {
            "name": self._name(spec.worker_id),
            "labels": labels,
            "environment": env,
            "volumes": parse_volumes(self.option("volumes")),
            "detach": True,
            "device_requests": self._device_requests(spec),
        }
        if command:
            options["command"] = [part.format(port=port) for part in shlex.split(command)]
        if self.host_network:
            options["network_mode"] = "host"
        else:
            options["ports"] = {f"{self.port}/tcp": ("127.0.0.1", None)}

        def run() -> Any:
            return self.client().containers.run(self.option("image"), **options)

        try:
            container = await asyncio.to_thread(run)
        except Exception as exc:
            await self._remove(options["name"])
            raise WorkerStartError(
                f"Docker could not start the worker: {exc}", pool=spec.pool
            ) from exc
        url = f"http://127.0.0.1:{port}" if self.host_network else None
        return WorkerHandle(spec.worker_id, spec.pool, url, container.id, labels=labels)

    async def _container(self, ref: str) -> Any | None:
        import docker.errors

        def get() -> Any | None:
            try:
                return self.client().containers.get(ref)
            except docker.errors.NotFound:
                return None

        return await asyncio.to_thread(get)

    async def _remove(self, ref: str) -> None:
        container = await self._container(ref)
        if container is not None:
            await asyncio.to_thread(container.remove, force=True)

    async def stop(self, handle: WorkerHandle) -> None:
        import docker.errors

        container = await self._container(handle.ref)
        if container is None:
            return
        try:
            await asyncio.to_thread(container.stop, timeout=10)
            await asyncio.to_thread(container.remove, force=True)
        except docker.errors.NotFound:
            pass

    async def list_owned(self) -> list[WorkerHandle]:
        filters = {
            "label": [f"{LABEL_POOL}={self.pool.name}", f"{LABEL_OWNER}={self.owner}"],
            "status": "running",
        }
        containers = await asyncio.to_thread(self.client().containers.list, filters=filters)
        owned = []
        for container in containers:
            labels = dict(container.labels)
            started = container.attrs.get("Created", "")
            owned.append(
                WorkerHandle(
                    labels.get(LABEL_WORKER, container.name),
                    self.pool.name,
                    self._url(container),
                    container.id,
                    created_at=_timestamp(started),
                    labels=labels,
                )
            )
        return owned

    async def health(self, handle: WorkerHandle) -> Health:
        container = await self._container(handle.ref)
        if container is None:
            return Health(False, f"container {handle.ref[:12]} is gone")
        state = container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            code = state.get("ExitCode")
            reason = f"container exited with code {code}"
            if state.get("OOMKilled"):
                reason += " (OOMKilled)"
            if state.get("Error"):
                reason += f": {state['Error']}"
            return Health(False, reason, code)
        if (state.get("Health") or {}).get("Status") == "unhealthy":
            return Health(False, "container is unhealthy (its HEALTHCHECK fails)")
        return Health(True)

    async def resolve_url(self, handle: WorkerHandle) -> str | None:
        container = await self._container(handle.ref)
        return self._url(container) if container is not None else None

    def _url(self, container: Any) -> str | None:
        if self.host_network:
            port = container.attrs.get("Config", {}).get("Env") or []
            for entry in port:
                if entry.startswith("COMFYFLEET_PORT="):
                    return f"http://127.0.0.1:{entry.split('=', 1)[1]}"
            return None
        ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
        for binding in ports.get(f"{self.port}/tcp") or []:
            if binding.get("HostPort"):
                return f"http://{binding.get('HostIp') or '127.0.0.1'}:{binding['HostPort']}"
        return None

    async def logs(self, handle: WorkerHandle, tail: int = 100) -> str:
        container = await self._container(handle.ref)
        if container is None:
            return ""
        raw = await asyncio.to_thread(container.logs, tail=tail)
        return bytes(raw).decode(errors="replace").rstrip()

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text[:26].rstrip("Z")).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
