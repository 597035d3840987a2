"""``comfyfleet submit | status | cancel | result``: the SDK from the shell, against a gateway or
a RunPod endpoint (or a worker's local API, or a ComfyUI). ``comfyfleet run`` stays the direct
path to one ComfyUI.

The target is ``--target`` (a URL, a RunPod endpoint id or ``runpod://ID``), else
``COMFYFLEET_GATEWAY_URL``; keys are ``--api-key``, else ``COMFYFLEET_API_KEY`` (gateway) or
``RUNPOD_API_KEY`` (RunPod). Heavy imports happen inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from comfyfleet.client.commands import (
    NegativeOpt,
    ParamOpt,
    PromptOpt,
    SeedOpt,
    TemplateOpt,
    TimeoutOpt,
    WorkflowArg,
)

TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "-t",
        help="Gateway URL, RunPod endpoint id / runpod://ID / URL, worker local API or ComfyUI "
        "URL (default: COMFYFLEET_GATEWAY_URL).",
        show_default=False,
    ),
]
KindOpt = Annotated[
    str | None,
    typer.Option(help="gateway, runpod, worker or comfy (default: detected).", show_default=False),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="Bearer key (default: COMFYFLEET_API_KEY, or RUNPOD_API_KEY for RunPod).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the default off a TTY).")]
OutOpt = Annotated[Path, typer.Option(help="Folder for the outputs.")]
TaskArg = Annotated[str, typer.Argument(help="Task (or RunPod job) id.")]


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("result")(result)


def submit(
    workflow: WorkflowArg = None,
    target: TargetOpt = None,
    kind: KindOpt = None,
    api_key: KeyOpt = None,
    template: TemplateOpt = None,
    param: ParamOpt = None,
    image: Annotated[
        list[str] | None,
        typer.Option("--image", "-i", help="Input image: a file or an http(s) URL (repeatable)."),
    ] = None,
    prompt: PromptOpt = None,
    negative: NegativeOpt = None,
    seed: SeedOpt = None,
    width: Annotated[int | None, typer.Option(min=1, help="Output width to inject.")] = None,
    height: Annotated[int | None, typer.Option(min=1, help="Output height to inject.")] = None,
    length: Annotated[
        int | None, typer.Option(min=1, help="Frames (video length) to inject.")
    ] = None,
    timeout: TimeoutOpt = None,
    priority: Annotated[int | None, typer.Option(help="Gateway queue priority.")] = None,
    webhook: Annotated[str | None, typer.Option(help="URL POSTed when it finishes.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="The same request again with it returns the same task (another: 409)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait, show progress, save the outputs into --out.")
    ] = False,
    out: OutOpt = Path("outputs"),
    as_json: JsonOpt = False,
) -> None:
    """Submit a job; print its id, or with --wait follow it and save every output."""
    from comfyfleet.client.commands import _param, _seed

    def go(client: Any) -> None:
        job = client.submit(
            workflow,
            template=template,
            images=list(image or []),
            prompt=prompt,
            negative=negative,
            seed=_seed(seed),
            params=dict(_param(p) for p in param or []),
            priority=priority,
            webhook=webhook,
            idempotency_key=idempotency_key,
            **{k: v for k, v in (("width", width), ("height", height), ("length", length),
                                 ("timeout", timeout)) if v is not None},
        )  # fmt: skip
        if not wait:
            if _json(as_json):
                _print_json({"id": job.id, "target": client.kind})
            else:
                typer.echo(job.id)
            return
        _finish(job, out, as_json, follow=True)

    _with_client(target, kind, api_key, as_json, go)


def status(
    task: TaskArg,
    target: TargetOpt = None,
    kind: KindOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print where a job is: queued, running (with its progress) or finished."""
    from comfyfleet.client.results import Result

    def go(client: Any) -> None:
        state = client.job(task).status()
        if isinstance(state, Result):
            body = state.to_dict()
        else:
            body = {"id": task, "status": state.status, "progress": state.describe()}
            if state.percent is not None:
                body["percent"] = state.percent
        if _json(as_json):
            _print_json(body)
        else:
            line = f"{task} {body['status']}"
            if body.get("progress") and body["progress"] != body["status"]:
                line += f" {body['progress']}"
            if isinstance(body.get("error"), dict):
                line += f": {body['error'].get('message')}"
            typer.echo(line)

    _with_client(target, kind, api_key, as_json, go)


def cancel(
    task: TaskArg,
    target: TargetOpt = None,
    kind: KindOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job: a queued one never runs, a running one is interrupted."""

    from comfyfleet.client.results import Result

    def go(client: Any) -> None:
        job = client.job(task)
        job.cancel()
        state = job.status()  # a finished job is left as it was: say so
        body = {"id": task, "status": state.status, "cancel_requested": True}
        if isinstance(state, Result) and state.status != "cancelled":
            body["note"] = "it had already finished"
        if _json(as_json):
            _print_json(body)
        else:
            typer.echo(f"{task} {state.status}" + (f" ({body['note']})" if "note" in body else ""))

    _with_client(target, kind, api_key, as_json, go)


def result(
    task: TaskArg,
    target: TargetOpt = None,
    kind: KindOpt = None,
    api_key: KeyOpt = None,
    out: OutOpt = Path("outputs"),
    as_json: JsonOpt = False,
) -> None:
    """Wait for a job to finish and save every output into --out."""

    def go(client: Any) -> None:
        _finish(client.job(task), out, as_json, follow=False)

    _with_client(target, kind, api_key, as_json, go)


# --- shared -----------------------------------------------------------------------------------
def _json(as_json: bool) -> bool:
    return as_json or not sys.stdout.isatty()


def _print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, default=str))


def _with_client(
    target: str | None, kind: str | None, api_key: str | None, as_json: bool, go: Any
) -> None:
    from comfyfleet.client.commands import _fail
    from comfyfleet.errors import ComfyFleetError, InvalidRequest

    try:
        url = target or _setting("gateway_url")
        if not url:
            raise InvalidRequest(
                "no target: give --target URL (or set COMFYFLEET_GATEWAY_URL)", field="target"
            )
        from comfyfleet.client.clients import Client

        with Client(url, kind=kind, api_key=api_key) as client:
            go(client)
    except ComfyFleetError as exc:
        _fail(exc, _json(as_json))


def _finish(job: Any, out: Path, as_json: bool, *, follow: bool) -> None:
    """Follow ``job`` (a progress bar on a TTY, unless JSON), save its outputs, print them;
    a failed job exits 1 with its error."""
    from comfyfleet.client.commands import _progress_bar

    bar = _progress_bar(_json(as_json))
    with bar:
        line = bar.add_task("submitted", total=100)
        for event in job.progress():
            bar.update(line, description=event.describe(), completed=event.percent or 0)
    done = job.wait()  # raises the job's error (exit 1 with its message)
    paths = done.save(out)
    if _json(as_json):
        _print_json(done.to_dict(paths))
    else:
        for path in paths:
            typer.echo(str(path))


def _setting(name: str) -> Any:
    from comfyfleet.config import get_settings

    return getattr(get_settings(), name, None)
