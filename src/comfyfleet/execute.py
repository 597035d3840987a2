"""The pipeline every face runs: one `JobSpec` against one ComfyUI, one `JobResult` back.

    prepare   decode inputs; render + inject + check the workflow against object_info
    upload    inputs under names of their own (``<job>_<i>_<name>``), or written straight
              into ComfyUI's input folder and fsynced (the RAM-disk fast path)
    submit    POST /prompt with our own prompt_id on the client's shared websocket
    run       wait for ``executing {node: null}``; progress; the deadline interrupts our prompt
    deliver   every output node's artifacts, streamed through the sink (from /view, or from
              the output folder when it is known -- then moved, not copied, into a sink that
              can take a file: the gateway's artifact store)
    cleanup   history entry, inputs and outputs of this job (files when the folders are
              known — ComfyUI has no delete API); also after a failure; kept when ``debug``

Failures raise `comfyfleet.errors` subclasses; adapters turn them into error payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from comfyfleet.comfy import Client, ProgressCallback
from comfyfleet.config import Settings, get_settings
from comfyfleet.errors import ComfyFleetError
from comfyfleet.inputs import decode_images
from comfyfleet.jobs import Artifact, JobResult, JobSpec, Progress
from comfyfleet.outputs.collect import collect, text_chunks
from comfyfleet.outputs.sink import Sink
from comfyfleet.staging import JobFiles
from comfyfleet.workflow import job_folder, prepare

log = logging.getLogger(__name__)


async def execute(
    spec: JobSpec,
    client: Client,
    sink: Sink,
    on_progress: ProgressCallback | None = None,
    *,
    templates_dir: Path | None = None,
    input_dir: Path | None = None,
    output_dir: Path | None = None,
    settings: Settings | None = None,
) -> JobResult:
    """Run ``spec`` on ``client``'s ComfyUI and deliver its artifacts through ``sink``."""
    settings = settings or get_settings()
    on_progress = _guarded(on_progress)
    deadline = time.monotonic() + (spec.timeout or settings.job_timeout)
    job = JobFiles(job_folder(spec.id), input_dir, output_dir, settings.wipe_zero_fill)
    timings: dict[str, float] = {}
    prompt_id: str | None = None
    forget: asyncio.Task[None] | None = None
    try:
        with _timed(timings, "prepare"):
            images = await decode_images(spec.images, settings)
            prepared = prepare(
                spec,
                await client.object_info(),
                templates_dir=templates_dir or settings.templates_dir,
                image_names=[job.input_name(i, img) for i, img in enumerate(images)],
                job_id=job.key,
            )
        with _timed(timings, "upload"):
            await job.stage(client, images)
        with _timed(timings, "submit"):
            prompt_id = await client.submit(prepared.graph, extra_data=spec.extra_data or None)
        await _report(on_progress, Progress(job_id=spec.id, stage="queued", prompt_id=prompt_id))
        with _timed(timings, "run"):
            entry = await client.wait(prompt_id, deadline, on_progress, job_id=spec.id)
        if not spec.debug:  # the entry is ours now; forget it while the bytes stream
            forget = asyncio.create_task(_quietly(client.delete_history([prompt_id])))
        if job.local:
            job.remember(entry)
        with _timed(timings, "deliver"):
            artifacts = collect(entry, include_temp=spec.outputs.include_temp)
            if spec.outputs.include_data:
                artifacts = await _deliver(client, sink, job, artifacts, keep=spec.debug)
    finally:
        with _timed(timings, "cleanup"):
            await _cleanup(client, job, prompt_id, forget, keep=spec.debug)
    await _report(on_progress, Progress(job_id=spec.id, stage="done", percent=100.0))
    return JobResult(
        job_id=spec.id,
        prompt_id=prompt_id,
        artifacts=artifacts,
        timings=timings,
        seeds=prepared.seeds,
    )


async def _cleanup(
    client: Client,
    job: JobFiles,
    prompt_id: str | None,
    forget: asyncio.Task[None] | None,
    *,
    keep: bool,
) -> None:
    """Remove the job's traces (unless ``keep``); ``forget`` may already be deleting history.
    The removal is a few unlink/rmdir calls (its outputs were moved out), done here: cheaper
    than the hop to a thread and back (~0.2 ms on the way to the answer). Zero-filling first
    writes whole files, so that runs in a thread."""
    if not keep:
        if forget is None and prompt_id is not None:
            forget = asyncio.create_task(_quietly(client.delete_history([prompt_id])))
        if job.local and job.zero_fill:
            await asyncio.to_thread(job.remove)
        elif job.local:
            job.remove()
    if forget is not None:
        await forget


async def _deliver(
    client: Client, sink: Sink, job: JobFiles, artifacts: list[Artifact], *, keep: bool
) -> list[Artifact]:
    move = None if keep else getattr(sink, "move", None)  # (a debug job keeps its files)

    async def one(artifact: Artifact) -> Artifact:
        if artifact.kind == "text":
            return await sink.store(artifact, text_chunks(artifact))
        path = job.output_path(artifact) if move is not None else None
        if path is not None:
            moved = await move(artifact, path)
            if moved is not None:
                return moved
        return await sink.store(artifact, job.chunks(client, artifact))

    if len(artifacts) == 1:
        return [await one(artifacts[0])]
    return list(await asyncio.gather(*(one(a) for a in artifacts)))


def _guarded(on_progress: ProgressCallback | None) -> ProgressCallback | None:
    """A failing progress callback (a webhook, a closed terminal) must not fail the job."""
    if on_progress is None:
        return None

    async def report(progress: Progress) -> None:
        try:
            result = on_progress(progress)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.warning("progress callback failed", exc_info=True)

    return report


async def _report(on_progress: ProgressCallback | None, progress: Progress) -> None:
    if on_progress is not None:
        await on_progress(progress)


async def _quietly(work: object) -> None:
    """Cleanup must not replace the job's outcome: log and carry on."""
    try:
        await work  # type: ignore[misc]
    except ComfyFleetError as exc:
        log.warning("cleanup: %s", exc.message)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - start, 6)
