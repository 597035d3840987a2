"""``comfyfleet worker``: the RunPod serverless worker (or its local API with ``--local``).

Heavy imports (runpod, boto3, the pipeline) happen inside the command, so ``comfyfleet --help``
stays fast. When COMFYUI_DIR is set, ComfyUI is launched first and boots while the runpod SDK is
imported; jobs wait for its readiness instead of the worker sleeping before it starts.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from comfyfleet.comfy.supervisor import Supervisor
    from comfyfleet.config import Settings


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
    from comfyfleet.config import Settings
    from comfyfleet.worker import logs

    settings = Settings()
    logs.configure(settings.log_level, json_lines=settings.log_json)
    supervisor = _start_comfy(settings)
    try:
        import runpod

        from comfyfleet.worker.handler import Worker

        handler = Worker(settings, supervisor, _progress_sender(runpod))
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


def _start_comfy(settings: Settings) -> Supervisor | None:
    """Launch ComfyUI from COMFYUI_DIR (after wiring volume models); None to use COMFYUI_URL."""
    if settings.comfy_dir is None:
        return None
    from comfyfleet.comfy.supervisor import Supervisor

    args = settings.comfy_args
    extra = write_model_paths(settings)
    if extra is not None and extra.parent != settings.comfy_dir.resolve():  # else auto-loaded
        args += f" --extra-model-paths-config {shlex.quote(str(extra))}"
    supervisor = Supervisor(
        settings.comfy_dir,
        settings.comfy_url,
        args=args,
        python=settings.comfy_python,
        ready_timeout=settings.comfy_ready_timeout,
    )
    supervisor.start()
    return supervisor


def write_model_paths(settings: Settings) -> Path | None:
    """Write ``extra_model_paths.yaml`` for the network volume's model roots, if any.

    It goes into COMFYUI_DIR unless a hand-written file is already there; then it goes under
    the data dir and is passed with ``--extra-model-paths-config``.
    """
    from comfyfleet.models.paths import HEADER, build_config, render, write_if_changed
    from comfyfleet.models.volumes import detect_roots

    roots = detect_roots(settings.model_roots).roots
    if not roots:
        return None
    dest = settings.comfy_dir.resolve() / "extra_model_paths.yaml"
    if dest.exists() and not dest.read_text(encoding="utf-8").startswith(HEADER):
        dest = settings.data_dir.resolve() / "extra_model_paths.yaml"
    write_if_changed(dest, render(build_config(roots)))
    return dest
