"""What ``comfyfleet serve`` does: settings from file + environment + flags, then uvicorn.

Precedence, strongest first: command-line flags, the ``--config`` file, ``COMFYFLEET_*``
environment variables, defaults. With nothing configured the gateway feeds the ComfyUI at
``comfy_url`` (127.0.0.1:8188); a ComfyUI that is not running only shows as unhealthy.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from comfyfleet.config import Settings
from comfyfleet.errors import InvalidRequest, SettingsError
from comfyfleet.gateway.state import DEMO_LABEL, Gateway, describe_database


class ConfigFileError(InvalidRequest):
    """The settings file cannot be used."""

    code = "invalid_config"


def read_config(path: Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) mapping of Settings field names to values."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:
        raise ConfigFileError(f"config file {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} must hold a mapping of settings")
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigFileError(
            f"config file {path}: unknown settings {', '.join(unknown)}", unknown=unknown
        )
    return data


def build_settings(
    *,
    config: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    comfy: list[str] | None = None,
    database: str | None = None,
    data_dir: Path | None = None,
    demo: bool = False,
    pools: list[str] | None = None,
) -> Settings:
    values: dict[str, Any] = read_config(config) if config else {}
    flags = {"host": host, "port": port, "database_url": database, "data_dir": data_dir}
    values.update({k: v for k, v in flags.items() if v is not None})
    if comfy:
        values["backends"] = list(comfy)
    if pools:
        values["pools"] = list(pools)
    try:
        settings = Settings(**values)
    except SettingsError as exc:  # one line naming the setting; say where it came from
        where = f" (config file {config}, flags or environment)" if config else ""
        detail = exc.message.removeprefix("invalid setting: ")
        raise ConfigFileError(f"invalid settings{where}: {detail}") from None
    if settings.pools:
        from comfyfleet.fleet.pools.spec import validate_pools

        validate_pools(settings)  # a bad pool spec: one line, before anything starts
    elif not settings.backends and not demo:
        settings = settings.model_copy(update={"backends": [settings.comfy_url]})
    return settings


def banner(gateway: Gateway, host: str, port: int) -> str:
    """The startup summary an operator reads first."""
    settings = gateway.settings
    shown = "[::1]" if host == "::1" else host
    url = f"http://{shown}:{port}"
    lines = [
        "comfyfleet gateway",
        f"  dashboard  {url}/",
        f"  API        {url}/api/v1/tasks   (OpenAPI: {url}/docs)",
        f"  database   {describe_database(settings)}",
        f"  artifacts  {gateway.artifacts.kind}",
        f"  auth       {gateway.keys.mode}",
    ]
    backends = gateway.backends()
    pools = gateway.fleet.workers.pools.values() if gateway.fleet.workers else ()
    for index, pool in enumerate(pools):
        label = "pools" if index == 0 else ""
        lines.append(f"  {label:<10} {pool.spec.describe()}")
    if not backends and not pools:
        lines.append("  backends   none (remote agents can join: comfyfleet agent)")
    for index, backend in enumerate(backends):
        label = "backends" if index == 0 else ""
        lines.append(f"  {label:<10} {backend['name']}  {backend.get('url') or ''}".rstrip())
    for index, (name, folders) in enumerate(gateway.fleet.folders.items()):
        label = "folders" if index == 0 else ""
        lines.append(f"  {label:<10} {name}  {folders.plan()}")
    if gateway.demo:
        lines.append(f"  !! {DEMO_LABEL}: outputs are synthetic")
    return "\n".join(lines)


def run(settings: Settings, *, demo: bool = False) -> None:
    """Serve until interrupted."""
    import uvicorn

    from comfyfleet.gateway.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(
        settings,
        demo=demo,
        announce=lambda gw: print(
            banner(gw, settings.host, settings.port), file=sys.stderr, flush=True
        ),
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
