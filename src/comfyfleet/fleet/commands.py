"""``comfyfleet agent``: a remote pull agent next to a ComfyUI, feeding from a gateway over HTTP.

Heavy imports happen inside the command, so ``comfyfleet --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)


def agent(
    gateway: Annotated[
        str | None,
        typer.Option(help="Gateway base URL (default: settings' gateway_url)", show_default=False),
    ] = None,
    comfy: Annotated[
        str | None,
        typer.Option(help="ComfyUI URL (default: settings' comfy_url)", show_default=False),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token with role agent (default: settings' agent_token)"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Backend name shown by the gateway (default: the ComfyUI's host:port)"),
    ] = None,
    templates_dir: Annotated[
        Path | None, typer.Option(help="Saved workflow templates (NAME.json).")
    ] = None,
    input_dir: Annotated[
        Path | None, typer.Option(help="ComfyUI's input folder when local (write, then wipe).")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="ComfyUI's output folder when local (wipe after).")
    ] = None,
    wait: Annotated[float, typer.Option(help="Long-poll seconds per claim.", min=1)] = 30.0,
) -> None:
    """Pull tasks from a gateway and run them on a ComfyUI; SIGTERM finishes the current task
    and exits."""
    import asyncio
    import logging

    from comfyfleet.config import get_settings
    from comfyfleet.fleet.remote import run_agent

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    gateway_url = gateway or settings.gateway_url
    if not gateway_url:
        raise typer.BadParameter(
            "give --gateway or set COMFYFLEET_GATEWAY_URL", param_hint="--gateway"
        )
    asyncio.run(
        run_agent(
            gateway_url,
            comfy or settings.comfy_url,
            token=token or settings.agent_token,
            name=name or settings.agent_name,
            settings=settings,
            templates_dir=templates_dir,
            input_dir=input_dir or settings.comfy_input_dir,
            output_dir=output_dir or settings.comfy_output_dir,
            claim_wait=wait,
        )
    )
