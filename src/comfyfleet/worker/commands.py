"""``comfyfleet worker``: the RunPod serverless worker (or its local API with ``--local``).

When COMFYUI_DIR is set, ComfyUI's process is the first thing started (`launch`, called by
`comfyfleet.cli.main` before the command line is even parsed); settings, the runpod SDK and the
pipeline are imported while it boots, and jobs wait for its readiness instead of the worker
sleeping before it starts. This module imports nothing heavy, so ``comfyfleet --help`` stays
fast too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command(name="worker")(worker)


def worker(
    local: bool = typer.Option(
        False, "--local", help="Serve the runpod SDK's local API (/run, /runsync, /status, /docs)."
    ),
    port: int = typer.Option(8000, "--port", help="Port of the local API."),
    host: str = typer.Option("127.0.0.1", "--host", help="Host of the local API."),
    test_input: str | None = typer.Option(
        None, "--test-input", help="Run one job from this JSON ({'input': {...}}) and exit."
    ),
) -> None:
    """Run the RunPod serverless worker around a local ComfyUI."""
    from comfyfleet.worker import launch

    try:
        supervisor = launch.launch().supervisor  # already running when started by cli.main
    except ValueError:  # let Settings() report the bad value precisely
        from comfyfleet.config import Settings

        Settings()
        raise
    try:
        from comfyfleet.config import Settings
        from comfyfleet.worker import sdk, warming
        from comfyfleet.worker.handler import Worker

        settings = Settings()
        runpod = sdk.import_runpod()
        state = warming.start(settings, supervisor)
        handler = Worker(settings, supervisor, _progress_sender(runpod), warmup=state)
        sys.argv = [sys.argv[0], *_sdk_args(local, port, host, test_input)]
        runpod.serverless.start({"handler": handler.handle})
    finally:
        if supervisor is not None:
            supervisor.stop()


def _progress_sender(runpod: Any) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """The SDK's ``progress_update`` where it has somewhere to post (RunPod sets
    RUNPOD_WEBHOOK_POST_OUTPUT); locally without it, progress is only logged."""
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return runpod.serverless.progress_update
    return lambda job, progress: None


def _sdk_args(local: bool, port: int, host: str, test_input: str | None) -> list[str]:
    """The runpod SDK reads its options from ``sys.argv`` (``--rp_serve_api`` etc.)."""
    args: list[str] = []
    if local:
        args += ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", host]
    if test_input is not None:
        args += ["--test_input", test_input]
    return args
