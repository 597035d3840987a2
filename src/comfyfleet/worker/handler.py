"""The RunPod handler: request in, `execute()` against the local ComfyUI, reference output out.

Everything a job needs beyond the shared pipeline lives next door: request shapes in
`formats`, seed 000's actions in `actions`, memory/disk checks in `resources`, output shape in
`response`, throttled progress in `progress`; the files a job asks for come from
`comfyfleet.models.jobmodels`. `execute` itself removes (zero-overwritten with
``wipe_zero_fill``) the job's inputs and outputs unless ``debug``. Nothing here raises to the
SDK: every failure comes back as ``{"error": ...}`` so one bad job never takes the worker down.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from comfyfleet.comfy.client import Client
from comfyfleet.comfy.supervisor import Supervisor
from comfyfleet.config import Settings
from comfyfleet.errors import ComfyFleetError, ResourceExhausted
from comfyfleet.execute import execute
from comfyfleet.jobs import JobSpec, new_id
from comfyfleet.models.jobmodels import JobModels
from comfyfleet.outputs.sink import Sink
from comfyfleet.runtime.warmup import WarmupState
from comfyfleet.worker import actions, formats, resources, response
from comfyfleet.worker.logs import job_context
from comfyfleet.worker.progress import Reporter, Send
from comfyfleet.workflow import job_folder

log = logging.getLogger(__name__)


class Worker:
    """One per process; ``handle`` is what `runpod.serverless.start` calls for each job."""

    def __init__(
        self,
        settings: Settings,
        supervisor: Supervisor | None,
        send_progress: Send,
        *,
        warmup: WarmupState | None = None,
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.send_progress = send_progress
        self.models = JobModels(settings)
        self._s3: Any = None
        self._clients: dict[tuple[int, int], Client] = {}
        self.context = actions.Context(settings, supervisor, self.scratch_dirs(), warmup)

    def scratch_dirs(self) -> list[Path]:
        dirs = [self.settings.comfy_input_dir, self.settings.comfy_output_dir]
        return [d for d in dirs if d is not None] or [Path.cwd()]

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id") or new_id())
        with job_context(job_id):
            try:
                request = formats.parse(
                    job.get("input"), job_id=job_id, default_template=self.settings.default_template
                )
                if not isinstance(request, JobSpec):
                    log.info("action", extra={"action": request.action})
                    return await actions.run(request, self.context)
                return await self.run(job, request)
            except ComfyFleetError as exc:
                log.warning("job failed: %s", exc.message, extra={"code": exc.code})
                return response.failure(exc)
            except Exception as exc:
                log.exception("unexpected error")
                return {"error": f"internal error: {type(exc).__name__}: {exc}", "code": "internal"}

    async def run(self, job: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
        s = self.settings
        self._check_resources("before")
        if s.comfy_org_api_key and formats.API_KEY_FIELD not in spec.extra_data:
            spec.extra_data[formats.API_KEY_FIELD] = s.comfy_org_api_key
        async with self.models.provide(spec) as model_paths:  # downloads need no ComfyUI
            if self.supervisor is not None:
                await self.supervisor.wait_ready()
            client = self._client()
            await self.models.refresh_catalogue(client, model_paths)
            reporter = Reporter(job, self.send_progress)
            log.info("job started", extra={"template": spec.template, "images": len(spec.images)})
            work = execute(
                spec,
                client,
                self._sink(spec),
                reporter,
                templates_dir=s.templates_dir,
                input_dir=s.comfy_input_dir,
                output_dir=s.comfy_output_dir,
                settings=s,
            )
            if self.supervisor is not None:
                result = await self.supervisor.guard(work, job_id=spec.id)
            else:
                result = await work
        log.info(
            "job finished",
            extra={
                "status": result.status,
                "artifacts": len(result.artifacts),
                "progress_sent": reporter.sent,
                "timings": result.timings,
            },
        )
        out = response.success(result)
        try:
            self._check_resources("after")
        except ResourceExhausted as exc:  # retire this worker rather than OOM the next job
            log.error("%s; asking RunPod for a fresh worker", exc.message)
            out["refresh_worker"] = True
        return out

    def _check_resources(self, when: str) -> None:
        resources.check(
            self.scratch_dirs(),
            min_memory=self.settings.min_free_memory_bytes,
            min_disk=self.settings.min_free_disk_bytes,
            when=when,
        )

    def _client(self) -> Client:
        """One client per event loop and ComfyUI process: its websocket and object_info cache
        are reused across jobs, and a restarted ComfyUI gets a fresh one."""
        generation = self.supervisor.generation if self.supervisor else 0
        key = (id(asyncio.get_running_loop()), generation)
        client = self._clients.get(key)
        if client is None:
            for stale in [k for k in self._clients if k[0] == key[0]]:
                old = self._clients.pop(stale)
                asyncio.get_running_loop().create_task(old.close())
            client = self._clients[key] = Client(self.settings.comfy_url)
        return client

    def _sink(self, spec: JobSpec) -> Sink:
        s = self.settings
        if s.bucket_endpoint_url and s.bucket_name:
            from comfyfleet.outputs.s3 import S3Sink, make_client

            if self._s3 is None:
                self._s3 = make_client(s)
            return S3Sink.from_settings(s, scope=job_folder(spec.id), client=self._s3)
        from comfyfleet.outputs.inline import InlineSink

        return InlineSink()
