"""`AsyncClient` and `Client`: one API over four targets.

    gateway   a comfyfleet gateway (``comfyfleet serve``)            progress: server-sent events
    runpod    a RunPod serverless endpoint running ``comfyfleet worker``   progress: /status polling
    worker    the runpod SDK's local API (``comfyfleet worker --local``)  progress: start and end
    comfy     a bare ComfyUI, through comfyfleet's pipeline in-process      progress: websocket

``kind`` is detected when not given (`targets.detect`). API keys default to the settings:
``COMFYFLEET_API_KEY`` for a gateway, ``RUNPOD_API_KEY`` for RunPod.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from comfyfleet.client.jobs import AsyncJob, Job
from comfyfleet.client.request import ImageInput, Seed, build_spec
from comfyfleet.client.results import Result
from comfyfleet.client.targets.base import SubmitOptions, Target
from comfyfleet.client.targets.detect import KINDS, Kind, probe_kind, static_kind
from comfyfleet.errors import InvalidRequest


class AsyncClient:
    """``async with AsyncClient("http://gateway:8080") as client: job = await
    client.submit("flow.json", images=[...], prompt="...", seed=7)``."""

    def __init__(
        self,
        target: str,
        *,
        kind: Kind | None = None,
        api_key: str | None = None,
        sync: bool = False,
        templates_dir: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        if kind is not None and kind not in KINDS:
            raise InvalidRequest(f"kind {kind!r}: expected one of {', '.join(KINDS)}", field="kind")
        self.url = target
        self.kind: Kind | None = kind or static_kind(target)
        self._api_key = api_key
        self._sync = sync
        self._templates_dir = Path(templates_dir) if templates_dir is not None else None
        self._timeout = timeout
        self._target: Target | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._target is not None:
            await self._target.aclose()
            self._target = None

    async def target(self) -> Target:
        if self._target is None:
            if self.kind is None:
                self.kind = await probe_kind(self.url)
            self._target = self._make(self.kind)
        return self._target

    def _make(self, kind: Kind) -> Target:
        if kind == "gateway":
            from comfyfleet.client.targets.gateway import GatewayTarget

            key = self._api_key or _setting("api_key")
            return GatewayTarget(self.url, api_key=key, timeout=self._timeout)
        if kind in ("runpod", "worker"):
            from comfyfleet.client.targets.runpod import RunPodTarget

            key = self._api_key or (_setting("runpod_api_key") if kind == "runpod" else None)
            return RunPodTarget(
                self.url, api_key=key, local=kind == "worker", sync=self._sync,
                timeout=self._timeout,
            )  # fmt: skip
        from comfyfleet.client.targets.comfy import ComfyTarget

        return ComfyTarget(self.url, templates_dir=self._templates_dir)

    async def submit(
        self,
        workflow: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        template: str | None = None,
        images: Sequence[ImageInput] = (),
        prompt: str | None = None,
        negative: str | None = None,
        seed: Seed = None,
        params: Mapping[str, Any] | None = None,
        priority: int | None = None,
        webhook: str | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> AsyncJob:
        """Send one job; returns its handle at once. ``workflow`` is an API graph or a JSON
        file; or name a saved ``template``. ``images`` are paths, bytes or URLs (in order, to
        the workflow's LoadImage nodes); ``seed`` an int or ``"random"``. ``priority``,
        ``webhook``, ``idempotency_key`` are the gateway's queue options; other ``fields``
        are `comfyfleet.jobs.JobSpec` fields (width, height, length, timeout, ...)."""
        spec = build_spec(
            workflow, template=template, images=images, prompt=prompt, negative=negative,
            seed=seed, params=params, **fields,
        )  # fmt: skip
        target = await self.target()
        options = SubmitOptions(priority=priority, webhook=webhook, idempotency_key=idempotency_key)
        return AsyncJob(target, await target.submit(spec, options))

    async def run(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> Result:
        """`submit` and `AsyncJob.wait` in one call."""
        job = await self.submit(*args, **kwargs)
        return await job.wait(timeout)

    async def job(self, job_id: str) -> AsyncJob:
        """The handle of a job submitted earlier (gateway task id, RunPod job id)."""
        return AsyncJob(await self.target(), job_id)


class Client:
    """The blocking `AsyncClient`: same arguments, same methods, no ``await``. Its event loop
    runs in a background thread, so it works from any code (not from inside a running loop's
    callbacks that must not block, as always)."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._async = self._portal.call(lambda: _make_async(target, kwargs))
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    @property
    def kind(self) -> Kind | None:
        return self._async.kind

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._portal_cm is not None:
            try:
                self._portal.call(self._async.aclose)
            finally:
                self._portal_cm.__exit__(None, None, None)
                self._portal_cm = None

    def submit(self, *args: Any, **kwargs: Any) -> Job:
        return Job(self._portal.call(lambda: self._async.submit(*args, **kwargs)), self._portal)

    def run(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> Result:
        return self.submit(*args, **kwargs).wait(timeout)

    def job(self, job_id: str) -> Job:
        return Job(self._portal.call(self._async.job, job_id), self._portal)


async def _make_async(target: str, kwargs: dict[str, Any]) -> AsyncClient:
    return AsyncClient(target, **kwargs)


def _setting(name: str) -> str | None:
    from comfyfleet.config import get_settings

    return getattr(get_settings(), name, None)
