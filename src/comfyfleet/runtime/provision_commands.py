"""``comfyfleet provision``: install ComfyUI (and SwarmUI) onto the volume, or check it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


class RichReporter:
    """A live progress display for a terminal: one row per step, a spinner on the current one."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = None

    def start(self, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("provisioning", total=total)

    def begin(self, name: str, what: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{name}: {what}")

    def end(self, r) -> None:
        from rich.text import Text

        line = Text(f"{r.name}: ")
        if r.status == "done":
            line.append("done", style="green").append(f" in {r.seconds:.1f} s")
        else:
            line.append("already done", style="dim")
        if r.detail:
            line.append(f" ({r.detail})")
        self.console.print(line)
        if self.task is not None:
            self.progress.advance(self.task)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

    def close(self) -> None:
        self.progress.stop()


def provision(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Install here (default: COMFYFLEET_PROVISION_DIR or the volume)."
        ),
    ] = None,
    check_only: Annotated[
        bool, typer.Option("--check", help="Only check; exit 1 unless provisioned and current.")
    ] = False,
    export: Annotated[
        bool,
        typer.Option("--export", help="Print `export COMFYUI_DIR=...` lines for a shell's eval."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Install ComfyUI at its pinned version, its venv, custom nodes and extra_model_paths.yaml
    onto the volume (and SwarmUI with COMFYFLEET_SWARMUI=1); a no-op when already there."""
    from comfyfleet.config import Settings
    from comfyfleet.errors import ProvisionError
    from comfyfleet.runtime import provision as prov
    from comfyfleet.runtime.provision_config import ProvisionConfig

    settings = Settings()
    if directory is not None:
        settings = settings.model_copy(update={"provision_dir": directory})
    config = ProvisionConfig.from_settings(settings)
    if check_only:
        status = prov.check(config)
        if as_json:
            typer.echo(json.dumps({"warm": status.warm, "reason": status.reason}))
        else:
            typer.echo(f"{config.root}: {status.reason}")
        raise typer.Exit(0 if status.warm else 1)
    reporter = RichReporter() if sys.stderr.isatty() else prov.LineReporter(_stderr)
    try:
        result = prov.ensure(config, reporter)
    except ProvisionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if export:
        typer.echo(f"export COMFYUI_DIR={shlex.quote(str(config.comfy_dir))}")
        typer.echo(f"export COMFYFLEET_COMFY_PYTHON={shlex.quote(str(config.venv_python))}")
    elif as_json:
        steps = [s.__dict__ for s in result.steps]
        out = {"warm": result.warm, "waited": result.waited, "root": str(config.root)}
        typer.echo(json.dumps(out | {"steps": steps, "installed": result.installed}))
    else:
        pins = (result.installed or {}).get("commits", {})
        comfy = f"ComfyUI {config.comfyui.ref} ({pins.get('ComfyUI', '?')[:12]})"
        how = "already provisioned" if result.warm else f"provisioned in {result.seconds:.1f} s"
        typer.echo(f"{config.root}: {how}: {comfy}, {len(config.nodes)} custom node(s)")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    app.command("provision")(provision)
