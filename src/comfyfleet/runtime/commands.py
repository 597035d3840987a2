"""``comfyfleet health``: one probe for volume, model paths, disk, memory, GPU and ComfyUI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

_MARK = {"ok": "✓", "warn": "!", "fail": "✗", "absent": "-", "skipped": "-"}
_COLOUR = {"ok": "green", "warn": "yellow", "fail": "red", "absent": "cyan", "skipped": "cyan"}


def health(
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show each check's data.")
    ] = False,
    comfy: Annotated[
        str | None, typer.Option("--comfy", help="ComfyUI URL (default: settings.comfy_url).")
    ] = None,
    no_comfy: Annotated[bool, typer.Option("--no-comfy", help="Do not probe ComfyUI.")] = False,
    extra_paths: Annotated[
        Path | None,
        typer.Option("--extra-paths", help="extra_model_paths.yaml to validate."),
    ] = None,
) -> None:
    """Check this box; exit 0 when ok or degraded, 1 when any check failed."""
    import asyncio

    from comfyfleet.config import Settings
    from comfyfleet.models.volumes import detect_roots
    from comfyfleet.runtime.health import run_checks

    settings = Settings()
    found = detect_roots(settings.model_roots, bases=settings.volume_bases)
    if extra_paths is None and settings.comfy_dir is not None:
        candidate = settings.comfy_dir / "extra_model_paths.yaml"
        extra_paths = candidate if candidate.exists() else None
    report = asyncio.run(
        run_checks(
            found,
            comfy_url=None if no_comfy else (comfy or settings.comfy_url),
            extra_paths_file=extra_paths,
            disk_paths=[settings.comfy_dir] if settings.comfy_dir else [],
            min_free_disk=settings.min_free_disk_bytes,
            min_free_memory=settings.min_free_memory_bytes,
        )
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2 if verbose else None))
    else:
        typer.secho(f"health: {report.status}", bold=True)
        for check in report.checks:
            mark = typer.style(_MARK[check.status], fg=_COLOUR[check.status])
            typer.echo(f"  {mark} {check.name:<12} {check.detail}")
            if verbose and check.data:
                for line in json.dumps(check.data, indent=2).splitlines():
                    typer.echo(f"      {line}")
    if report.status == "fail":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("health")(health)
