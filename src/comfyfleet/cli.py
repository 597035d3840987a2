"""The `comfyfleet` command. Each face registers its own sub-commands from a small module that
imports its heavy dependencies only when a command runs, so `comfyfleet --help` stays fast."""

from __future__ import annotations

import importlib

import typer

from comfyfleet import __version__

app = typer.Typer(
    name="comfyfleet",
    help="Run ComfyUI workflows in production: gateway, RunPod worker, CLI and runtime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Modules that define ``register(app)``; each adds its commands.
COMMAND_MODULES: list[str] = [
    "comfyfleet.worker.commands",
    "comfyfleet.client.commands",
    "comfyfleet.models.commands",
    "comfyfleet.runtime.commands",
]


@app.callback()
def _root() -> None:
    """Run ComfyUI workflows in production: gateway, RunPod worker, CLI and runtime."""


@app.command()
def version() -> None:
    """Print comfyfleet's version."""
    typer.echo(__version__)


def build_app() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
