"""The `comfyfleet` command. Each face registers its own sub-commands from a small module that
imports its heavy dependencies only when a command runs, so `comfyfleet --help` stays fast.

``comfyfleet <command> ...`` registers only the module that defines that command
(`COMMAND_OWNERS`), so one command does not pay for every face's imports; ``--help`` and
unlisted names build the whole app. ``comfyfleet worker`` goes further: ComfyUI's process is
started before typer is even imported (`comfyfleet.worker.launch`), so it boots while the
command line parser and the rest of the worker load. A bad setting (`SettingsError`) ends every
command the same way: one line on stderr, exit status 2.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import TYPE_CHECKING

from comfyfleet import __version__

if TYPE_CHECKING:
    import typer

HELP = "Run ComfyUI workflows in production: gateway, RunPod worker, CLI and runtime."

# Modules that define ``register(app)``; each adds its commands.
COMMAND_MODULES: list[str] = [
    "comfyfleet.worker.commands",
    "comfyfleet.client.commands",
    "comfyfleet.client.task_commands",
    "comfyfleet.models.commands",
    "comfyfleet.runtime.commands",
    "comfyfleet.runtime.provision_commands",
    "comfyfleet.fleet.commands",
    "comfyfleet.gateway.commands",
]

# Command name -> the module in COMMAND_MODULES that registers it (a shortcut; a command missing
# here still works, through the whole app).
COMMAND_OWNERS: dict[str, str] = {
    "worker": "comfyfleet.worker.commands",
    "run": "comfyfleet.client.commands",
    "submit": "comfyfleet.client.task_commands",
    "status": "comfyfleet.client.task_commands",
    "cancel": "comfyfleet.client.task_commands",
    "result": "comfyfleet.client.task_commands",
    "paths": "comfyfleet.models.commands",
    "models": "comfyfleet.models.commands",
    "health": "comfyfleet.runtime.commands",
    "provision": "comfyfleet.runtime.provision_commands",
    "agent": "comfyfleet.fleet.commands",
    "serve": "comfyfleet.gateway.commands",
}


def _root() -> None:
    """Run ComfyUI workflows in production: gateway, RunPod worker, CLI and runtime."""


def version() -> None:
    """Print comfyfleet's version."""
    print(__version__)


def build_app(only: str | None = None) -> typer.Typer:
    """A new app with every command, or only with ``only`` when `COMMAND_OWNERS` knows it."""
    import typer

    app = typer.Typer(
        name="comfyfleet", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False
    )
    app.callback()(_root)
    app.command()(version)
    owner = COMMAND_OWNERS.get(only or "")
    for name in [owner] if owner in COMMAND_MODULES else COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    only = sys.argv[1] if len(sys.argv) > 1 else None
    if only == "worker" and not {"--help", "-h"} & set(sys.argv[2:]):
        _launch_comfy()
    try:
        build_app(only=only)()
    except ValueError as exc:
        # A bad environment variable ends in one line, whichever command read it.
        from comfyfleet.errors import SettingsError

        if not isinstance(exc, SettingsError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _launch_comfy() -> None:
    """Start ComfyUI now; the worker command picks the running process up. A bad setting
    (ValueError, nothing started) is reported by the command, through `Settings`."""
    from comfyfleet.worker import launch

    with contextlib.suppress(ValueError):
        launch.launch()


if __name__ == "__main__":
    main()
