"""``runpod``: GPU pods through the runpod SDK's pod calls (``create_pod``, ``get_pod``,
``get_pods``, ``terminate_pod``), run in threads because the SDK is synchronous.

A pod runs the pool's ``image`` (a ComfyUI image; the project's own images serve ComfyUI on
8188) with ``gpu`` (a RunPod GPU type id; none = a CPU pod) x ``gpu_count``, an optional
network volume (``volume_id``, mounted at /runpod-volume: the models) and ``env`` (JSON).
Pods are named ``comfyfleet-<owner>-<pool>-<worker>``; that name is how `list_owned` finds
them again after a restart. The worker's URL is the pod's public TCP mapping of ``port`` when
it has one, else RunPod's HTTP proxy ``https://<pod>-<port>.proxy.runpod.net``.

The API key is ``COMFYFLEET_RUNPOD_API_KEY`` (or ``RUNPOD_API_KEY``); the SDK reads its API
base URL from ``RUNPOD_API_BASE_URL`` (tests point it at a local stand-in). RunPod keeps no
container logs reachable through this API, so `logs` has nothing to give.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

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

_SDK_LOCK = threading.Lock()  # the SDK keeps its API key in a module global
PROXY_URL = "https://{pod_id}-{port}.proxy.runpod.net"
GONE = ("EXITED", "TERMINATED", "DEAD")


class RunPodProvider(Provider):
    kind = "runpod"

    @property
    def port(self) -> int:
        return int(self.option("port", "8188") or 8188)

    def validate(self) -> None:
        if not self.option("image"):
            raise self.bad("needs image=... (a ComfyUI image, e.g. the project's worker image)")
        if not (self.option("port", "8188") or "").isdigit():
            raise self.bad(f"port={self.option('port')!r} must be a number")
        self.env_option()
        if not self.settings.runpod_api_key:
            raise self.bad("needs COMFYFLEET_RUNPOD_API_KEY (or RUNPOD_API_KEY)")

    def _prefix(self) -> str:
        return f"comfyfleet-{self.owner}-{self.pool.name}-"

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        import runpod

        def call() -> Any:
            with _SDK_LOCK:
                runpod.api_key = self.settings.runpod_api_key
                return getattr(runpod, name)(*args, **kwargs)

        return await asyncio.to_thread(call)

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        labels = self.labels(spec)
        env = {
            **self.env_option(),
            **spec.env,
            "COMFYFLEET_POOL": spec.pool,
            "COMFYFLEET_WORKER": spec.worker_id,
            "COMFYFLEET_OWNER": self.owner,
        }
        gpu = self.option("gpu")
        options: dict[str, Any] = {
            "image_name": self.option("image"),
            "gpu_type_id": gpu,
            "cloud_type": self.option("cloud", "ALL"),
            "ports": f"{self.port}/http,{self.port}/tcp",
            "env": env,
            "support_public_ip": True,
            "start_ssh": False,
        }
        if gpu:
            options["gpu_count"] = int(self.option("gpu_count", "1") or 1)
        if self.option("volume_id"):
            options["network_volume_id"] = self.option("volume_id")
        try:
            pod = await self._call("create_pod", self._prefix() + spec.worker_id, **options)
        except Exception as exc:
            raise WorkerStartError(f"RunPod refused the pod: {exc}", pool=spec.pool) from exc
        return WorkerHandle(spec.worker_id, spec.pool, None, str(pod["id"]), labels=labels)

    async def stop(self, handle: WorkerHandle) -> None:
        pod = await self._call("get_pod", handle.ref)
        if pod:
            await self._call("terminate_pod", handle.ref)

    async def list_owned(self) -> list[WorkerHandle]:
        prefix = self._prefix()
        owned = []
        for pod in await self._call("get_pods") or []:
            name = str(pod.get("name") or "")
            if not name.startswith(prefix) or pod.get("desiredStatus") in GONE:
                continue
            worker_id = name.removeprefix(prefix)
            labels = {LABEL_POOL: self.pool.name, LABEL_WORKER: worker_id, LABEL_OWNER: self.owner}
            uptime = float(pod.get("uptimeSeconds") or 0)
            owned.append(
                WorkerHandle(
                    worker_id,
                    self.pool.name,
                    self._url(pod),
                    str(pod["id"]),
                    created_at=time.time() - uptime,
                    labels=labels,
                )
            )
        return owned

    async def health(self, handle: WorkerHandle) -> Health:
        pod = await self._call("get_pod", handle.ref)
        if not pod:
            return Health(False, f"pod {handle.ref} is gone")
        status = pod.get("desiredStatus")
        if status in GONE:
            detail = pod.get("lastStatusChange") or ""
            return Health(False, f"pod {handle.ref} is {status}: {detail}".rstrip(": "))
        return Health(True)

    async def resolve_url(self, handle: WorkerHandle) -> str | None:
        pod = await self._call("get_pod", handle.ref)
        return self._url(pod) if pod else None

    def _url(self, pod: dict[str, Any]) -> str | None:
        runtime = pod.get("runtime") or {}
        if not runtime:
            return None  # not running yet
        for port in runtime.get("ports") or []:
            if (
                port.get("privatePort") == self.port
                and port.get("isIpPublic")
                and port.get("type") == "tcp"
            ):
                return f"http://{port['ip']}:{port['publicPort']}"
        return PROXY_URL.format(pod_id=pod["id"], port=self.port)
