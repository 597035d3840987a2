"""The SDK: run a job against a ComfyUI from Python in one call (the CLI's ``run`` uses the same
pipeline). For many jobs, keep one `comfyfleet.comfy.Client` open and call
`comfyfleet.execute.execute` yourself: the client's websocket and object_info are then reused."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.jobs import JobResult, JobSpec


async def run(
    spec: JobSpec,
    url: str,
    *,
    out: Path | None = None,
    templates_dir: Path | None = None,
    ready_timeout: float = 10.0,
) -> JobResult:
    """Run ``spec`` on the ComfyUI at ``url``; artifacts go into ``out`` (or inline as base64)."""
    from comfyfleet.comfy import Client
    from comfyfleet.execute import execute
    from comfyfleet.outputs.inline import InlineSink
    from comfyfleet.outputs.local import LocalSink

    sink = LocalSink(out) if out is not None else InlineSink()
    async with Client(url) as client:
        await client.wait_ready(timeout=ready_timeout)
        return await execute(spec, client, sink, templates_dir=templates_dir)
