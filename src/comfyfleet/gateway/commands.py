"""``comfyfleet serve``: the gateway, with zero configuration.

Heavy imports happen inside the command so ``comfyfleet --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    comfy: Annotated[
        list[str] | None,
        typer.Option(
            "--comfy",
            help="ComfyUI backend URL, or NAME=URL; repeat for more "
            "(default http://127.0.0.1:8188).",
            show_default=False,
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(help="postgresql://... to scale out (default: SQLite under the data dir)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Queue, artifacts and secrets (default .comfyfleet)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML or TOML file of settings (field names as in COMFYFLEET_*, lowercase)."
        ),
    ] = None,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool",
            help="Worker pool the gateway starts and scales, NAME=PROVIDER:key=value,... "
            "(e.g. gpu=local:min=0,max=2); repeat for more. See docs/fleet.md.",
            show_default=False,
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Also start the built-in ComfyUI test server as a backend (not real)."),
    ] = False,
) -> None:
    """Start the gateway: HTTP API, durable queue, local agents, webhooks and dashboard."""
    from comfyfleet.errors import ComfyFleetError
    from comfyfleet.gateway.launch import build_settings, run

    try:
        settings = build_settings(
            config=config,
            host=host,
            port=port,
            comfy=comfy or [],
            database=database,
            data_dir=data_dir,
            demo=demo,
            pools=pool or [],
        )
        run(settings, demo=demo)
    except ComfyFleetError as exc:
        typer.secho(f"comfyfleet serve: {exc.message}", err=True, fg="red")
        raise typer.Exit(2) from None
