"""The SDK: `Client` / `AsyncClient` submit jobs to a gateway, a RunPod endpoint, a worker's
local API or a bare ComfyUI with one API (see docs/sdk.md); `run` runs one `JobSpec` on a
ComfyUI in one call (what ``comfyfleet run`` uses).

    clients.py   Client, AsyncClient            jobs.py      AsyncJob, Job (wait, progress, cancel)
    request.py   arguments -> JobSpec           results.py   Result, Output, ProgressEvent
    transport.py httpx, retries, error decoding targets/     one module per target

Names are imported on first use, so ``import comfyfleet.client`` stays cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyfleet.client.clients import AsyncClient, Client
    from comfyfleet.client.jobs import AsyncJob, Job
    from comfyfleet.client.results import Output, ProgressEvent, Result
    from comfyfleet.jobs import JobResult, JobSpec

EXPORTS = {
    "AsyncClient": "comfyfleet.client.clients",
    "Client": "comfyfleet.client.clients",
    "AsyncJob": "comfyfleet.client.jobs",
    "Job": "comfyfleet.client.jobs",
    "Output": "comfyfleet.client.results",
    "ProgressEvent": "comfyfleet.client.results",
    "Result": "comfyfleet.client.results",
}
__all__ = ["AsyncClient", "AsyncJob", "Client", "Job", "Output", "ProgressEvent", "Result", "run"]


def __getattr__(name: str) -> Any:
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
