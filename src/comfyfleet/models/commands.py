"""``comfyfleet paths`` and ``comfyfleet models sync|list``.

Heavy imports (aiohttp, rich, huggingface_hub) happen inside the commands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from comfyfleet.config import Settings
    from comfyfleet.models.manifest import ModelEntry
    from comfyfleet.models.volumes import Detection, ModelRoot

models_app = typer.Typer(help="Model files: sync a manifest, list what is present.")

RootOpt = Annotated[
    list[Path] | None,
    typer.Option("--root", help="Model root (a dir of model folders); repeatable; first wins."),
]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", "-m", help="Manifest YAML (plus MODELS env).")
]


def _settings() -> Settings:
    from comfyfleet.config import Settings

    return Settings()


def _detect(settings: Settings, roots: list[Path] | None, create: bool = False) -> Detection:
    from comfyfleet.models.volumes import detect_roots

    configured = roots or settings.model_roots
    return detect_roots(configured, bases=settings.volume_bases, create=create)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, err=True, fg="red")
    return typer.Exit(code)


def paths(
    write: Annotated[
        Path | None, typer.Option("--write", "-w", help="Write extra_model_paths.yaml here.")
    ] = None,
    root: RootOpt = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create every known model folder in each root.")
    ] = False,
    symlink: Annotated[
        Path | None,
        typer.Option("--symlink", help="Also link each volume folder into this models dir."),
    ] = None,
) -> None:
    """Detect volume model roots and wire them into ComfyUI (prints the YAML without --write)."""
    from comfyfleet.models.paths import generate

    found = _detect(_settings(), root, create=create)
    for missing in found.missing:
        typer.secho(f"configured root {missing} does not exist", err=True, fg="yellow")
    for given, used in found.descended.items():
        typer.secho(f"root {given}: using the models at {used}", err=True, fg="yellow")
    for empty in found.empty:
        typer.secho(
            f"warning: root {empty} holds none of ComfyUI's model folders (checkpoints, loras, "
            "...) and no usual layout (comfyui/models, ComfyUI/models, models, SwarmUI/Models) "
            "below it; the paths written name folders that do not exist (--create makes them)",
            err=True,
            fg="yellow",
        )
    if not found.roots:
        raise _fail("no model root found (mount a volume or pass --root DIR)")
    text, created, report = generate(found.roots, write=write, create=create, symlink_into=symlink)
    if write is None:
        typer.echo(text, nl=False)
    else:
        for r in found.roots:
            typer.echo(f"root {r.path} ({r.layout}, {r.source})", err=True)
        typer.echo(f"wrote {write}", err=True)
    if created:
        typer.echo(f"created {len(created)} folders", err=True)
    if report is not None:
        typer.echo(
            f"links: {len(report.linked)} made, {len(report.kept)} kept, "
            f"{len(report.skipped)} skipped",
            err=True,
        )
        for path, why in report.skipped.items():
            typer.secho(f"  skipped {path}: {why}", err=True, fg="yellow")


def _entries(settings: Settings, manifest: Path | None) -> list[ModelEntry]:
    from comfyfleet.errors import ManifestError
    from comfyfleet.models.manifest import load_manifest, parse_models_env

    try:
        entries = load_manifest(manifest) if manifest else []
        return entries + parse_models_env(settings.models)
    except ManifestError as e:
        raise _fail(e.message, 2) from None


def _model_roots(settings: Settings, root: list[Path] | None, create: bool) -> list[ModelRoot]:
    """Roots for sync/list; an explicit root is used (and made, for sync) even if missing."""
    from comfyfleet.models.volumes import ModelRoot

    found = _detect(settings, root, create=create)
    if found.roots:
        return found.roots
    explicit = root or settings.model_roots
    if explicit:
        return [ModelRoot(Path(explicit[0]), source="configured")]
    if settings.comfy_dir is not None:
        return [ModelRoot(settings.comfy_dir / "models", source="comfy_dir")]
    raise _fail("no model root found (mount a volume, pass --root DIR or set COMFYUI_DIR)", 2)


@models_app.command("sync")
def sync_cmd(
    manifest: ManifestOpt = None,
    root: RootOpt = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Hash files already present against sha256.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Parallel downloads.")] = 4,
) -> None:
    """Link (host cache) or download every model in the manifest / MODELS into its folder."""
    import asyncio

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from comfyfleet.models.sync import Sources, sync

    settings = _settings()
    entries = _entries(settings, manifest)
    if not entries:
        typer.echo("nothing to sync (no manifest entries and MODELS is empty)")
        return
    roots = _model_roots(settings, root, create=True)
    sources = Sources(hf_cache_dir=settings.hf_cache_dir, hf_token=settings.hf_token)
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    quiet = not console.is_terminal  # a pipe or a log gets the result lines only
    with Progress(*columns, console=console, transient=True, disable=quiet) as bars:

        def progress_for(entry: ModelEntry) -> Callable[[int, int | None], None]:
            task = bars.add_task(f"{entry.folder}/{entry.name}", total=entry.size, start=False)

            def update(done: int, total: int | None) -> None:
                bars.start_task(task)
                bars.update(task, completed=done, total=total or entry.size)

            return update

        outcomes = asyncio.run(
            sync(
                entries,
                roots[0],
                sources=sources,
                verify=verify,
                concurrency=concurrency,
                progress=progress_for,
            )
        )
    failed = 0
    for o in outcomes:  # one line each, never wrapped: logs and scripts read them
        if o.error is None:
            console.print(f"[green]{o.how:>10}[/] {o.path}", soft_wrap=True, highlight=False)
        else:
            failed += 1
            line = f"[red]{'failed':>10}[/] {o.path}: {escape(o.error.message)}"
            console.print(line, soft_wrap=True, highlight=False)
    if failed:
        raise typer.Exit(1)


@models_app.command("list")
def list_cmd(
    manifest: ManifestOpt = None,
    root: RootOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Hash files against sha256.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each manifest model as present, missing or corrupt (exit 1 unless all present)."""
    from rich.console import Console
    from rich.table import Table

    from comfyfleet.models.sync import status

    settings = _settings()
    entries = _entries(settings, manifest)
    states = (
        status(entries, _model_roots(settings, root, create=False), verify=verify)
        if entries
        else []
    )
    if as_json:
        rows = [
            {
                "folder": s.entry.folder,
                "name": s.entry.name,
                "source": s.entry.source,
                "state": s.state,
                "path": str(s.path),
                "detail": s.detail,
            }
            for s in states
        ]
        typer.echo(json.dumps(rows, indent=2))
    elif not (console := Console()).is_terminal:  # a pipe or a file: whole paths, one per line
        for s in states:
            where = f"{s.path}" + (f" ({s.detail})" if s.detail else "")
            typer.echo(f"{s.state:<8} {s.entry.folder:<12} {s.entry.name}  {where}")
    else:
        table = Table("state", "folder", "file", "path / detail")
        table.columns[3].overflow = "fold"  # wrapped when narrow, never cut short
        colour = {"present": "green", "missing": "yellow", "corrupt": "red"}
        for s in states:
            where = f"{s.path}" + (f" ({s.detail})" if s.detail else "")
            table.add_row(f"[{colour[s.state]}]{s.state}[/]", s.entry.folder, s.entry.name, where)
        console.print(table)
    if any(s.state != "present" for s in states):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("paths")(paths)
    app.add_typer(models_app, name="models")
