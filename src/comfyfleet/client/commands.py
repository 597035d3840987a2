"""``comfyfleet run``: one workflow against a ComfyUI, artifacts saved into a folder.

Heavy imports (aiohttp, Pillow, the pipeline) happen inside the command, so ``--help`` is fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

# The job's arguments that ``comfyfleet submit`` (task_commands.py) takes too, with one meaning.
WorkflowArg = Annotated[
    Path | None,
    typer.Argument(help="API-format workflow JSON (omit with --template).", show_default=False),
]
TemplateOpt = Annotated[str | None, typer.Option(help="Saved template name instead.")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Template value k=v (v parsed as JSON when it is)."),
]
PromptOpt = Annotated[str | None, typer.Option(help="Positive prompt to inject.")]
NegativeOpt = Annotated[str | None, typer.Option(help="Negative prompt to inject.")]
SeedOpt = Annotated[str | None, typer.Option(help="'random' or an integer.")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Seconds before the job is stopped.")]


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    workflow: WorkflowArg = None,
    comfy: Annotated[
        str | None, typer.Option("--comfy", help="ComfyUI URL [default: settings' comfy_url]")
    ] = None,
    template: TemplateOpt = None,
    templates_dir: Annotated[Path | None, typer.Option(help="Where templates live.")] = None,
    param: ParamOpt = None,
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="Input image file (repeatable).")
    ] = None,
    prompt: PromptOpt = None,
    negative: NegativeOpt = None,
    seed: SeedOpt = None,
    width: Annotated[
        int | None,
        typer.Option(
            min=1, help="Width in pixels, set on every node that makes the latent or image."
        ),
    ] = None,
    height: Annotated[
        int | None,
        typer.Option(
            min=1, help="Height in pixels, set on every node that makes the latent or image."
        ),
    ] = None,
    length: Annotated[
        int | None,
        typer.Option(
            min=1, help="Length in frames (video), set on those size nodes that have one."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the artifacts.")] = Path("outputs"),
    timeout: TimeoutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JobResult as JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Keep inputs/outputs on the server.")] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a ComfyUI that is still starting.")
    ] = 0.0,
) -> None:
    """Run a workflow on a ComfyUI and save every artifact into --out."""
    import asyncio

    from comfyfleet.config import get_settings
    from comfyfleet.errors import ComfyFleetError

    settings = get_settings()
    try:
        spec = _spec(
            workflow, template, param or [], image or [], prompt, negative, seed,
            width, height, length, timeout, debug,
        )  # fmt: skip
        result = asyncio.run(
            _execute(spec, comfy or settings.comfy_url, templates_dir, out, as_json, wait)
        )
    except ComfyFleetError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(result.model_dump_json(indent=2, exclude_none=True))
        return
    for artifact in result.artifacts:
        typer.echo(artifact.path or artifact.text or artifact.filename)


def _spec(
    workflow: Path | None,
    template: str | None,
    params: list[str],
    images: list[Path],
    prompt: str | None,
    negative: str | None,
    seed: str | None,
    width: int | None,
    height: int | None,
    length: int | None,
    timeout: float | None,
    debug: bool,
) -> Any:
    """Build the JobSpec; every mistake becomes an `InvalidRequest` naming the argument."""
    import base64

    from pydantic import ValidationError

    from comfyfleet.errors import InvalidRequest, WorkflowFormatError
    from comfyfleet.jobs import InputImage, JobSpec

    if (workflow is None) == (template is None):
        raise InvalidRequest("give a WORKFLOW file or --template NAME (exactly one)")
    graph = None
    if workflow is not None:
        try:
            graph = json.loads(workflow.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidRequest(f"cannot read workflow {workflow}: {exc.strerror}") from None
        except ValueError as exc:
            raise WorkflowFormatError(f"workflow {workflow} is not valid JSON: {exc}") from None
        if not isinstance(graph, dict):
            raise WorkflowFormatError(f"workflow {workflow} is not a JSON object")
    inputs = []
    for path in images:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"cannot read image {path}: {exc.strerror}") from None
        inputs.append(InputImage(name=path.name, image=base64.b64encode(data).decode()))
    try:
        return JobSpec(
            workflow=graph,
            template=template,
            params=dict(_param(p) for p in params),
            images=inputs,
            prompt=prompt,
            negative=negative,
            seed=_seed(seed),
            width=width,
            height=height,
            length=length,
            timeout=timeout,
            debug=debug,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidRequest(f"{where}: {first['msg']}") from None


def _param(text: str) -> tuple[str, Any]:
    from comfyfleet.errors import InvalidRequest

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidRequest(f"--param {text!r}: expected NAME=VALUE")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _seed(seed: str | None) -> int | str | None:
    from comfyfleet.errors import InvalidRequest

    if seed is None or seed == "random":
        return seed
    try:
        return int(seed)
    except ValueError:
        raise InvalidRequest(f"--seed {seed!r}: expected 'random' or an integer") from None


async def _execute(
    spec: Any, url: str, templates_dir: Path | None, out: Path, quiet: bool, wait: float
) -> Any:
    from comfyfleet.comfy import Client
    from comfyfleet.execute import execute
    from comfyfleet.outputs.local import LocalSink

    bar = _progress_bar(quiet)
    task = bar.add_task("connecting", total=100)

    def on_progress(report: Any) -> None:
        what = report.stage
        if report.node is not None:
            what = f"node {report.node} ({report.class_type})"
            if report.max:
                what += f" step {report.value:g}/{report.max:g}"
        bar.update(task, description=what, completed=report.percent or 0)

    async with Client(url) as client:
        await client.wait_ready(timeout=wait)
        with bar:
            return await execute(
                spec, client, LocalSink(out), on_progress, templates_dir=templates_dir
            )


def _progress_bar(quiet: bool) -> Any:
    """A rich progress bar on stderr, drawn only on a terminal and unless ``quiet`` (JSON)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )


def _fail(exc: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": exc.to_dict()}, indent=2, default=str))
    else:
        typer.echo(f"error: {exc.message}", err=True)
        for entry in exc.details.get("node_errors") or []:
            typer.echo(
                f"  node {entry.get('node_id')} ({entry.get('class_type')}) "
                f"input {entry.get('input_name')!r}: {entry.get('message')}",
                err=True,
            )
    raise typer.Exit(1)
