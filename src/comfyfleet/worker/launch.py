"""Launching ComfyUI before anything heavy is imported.

ComfyUI takes seconds to boot and the worker's own imports (pydantic-settings, the runpod SDK,
aiohttp, the pipeline) take about as long, so they should overlap: `comfyfleet worker` starts
ComfyUI first and imports the rest while it boots. Building `Settings` alone costs ~0.4 s of
pydantic-settings, so the few values a launch needs are read here straight from the environment,
under the same names `Settings` accepts (``tests/worker/test_launch.py`` checks they agree).
Only the standard library, psutil and `comfyfleet.comfy.supervisor` are imported on this path,
and `comfyfleet.cli.main` calls `launch` before it even builds the command line parser (typer
builds its option parsers with pydantic).
"""

from __future__ import annotations

import atexit
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from comfyfleet.envforms import LIST_FORM, split_list

if TYPE_CHECKING:
    from comfyfleet.comfy.supervisor import Supervisor
    from comfyfleet.runtime.provision_config import ProvisionConfig
    from comfyfleet.runtime.swarmui import SwarmProcess

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


class PathSettings(Protocol):
    """What `write_model_paths` reads (`LaunchSettings` or `Settings`)."""

    comfy_dir: Path | None
    model_roots: list[Path]
    volume_bases: list[Path]
    data_dir: Path


@dataclass(frozen=True)
class LaunchSettings:
    """The `Settings` fields a launch needs, with the same defaults and environment names."""

    comfy_dir: Path | None = None
    comfy_url: str = "http://127.0.0.1:8188"
    comfy_args: str = "--listen 127.0.0.1 --port 8188 --disable-auto-launch"
    comfy_python: str | None = None
    comfy_ready_timeout: float = 600.0
    model_roots: list[Path] = field(default_factory=list)
    volume_bases: list[Path] = field(
        default_factory=lambda: [Path("/runpod-volume"), Path("/workspace")]
    )
    data_dir: Path = Path(".comfyfleet")
    log_level: str = "INFO"
    log_json: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LaunchSettings:
        """Read like `Settings()`: ``COMFYFLEET_<FIELD>`` or the legacy name, first one set
        wins, names case-insensitive. Raises ValueError on a value `Settings` would reject."""
        env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}

        def get(name: str, *legacy: str) -> str | None:
            for key in (f"comfyfleet_{name}", *legacy):
                if key.lower() in env:
                    return env[key.lower()]
            return None

        out: dict[str, object] = {}
        if (v := get("comfy_dir", "COMFYUI_DIR")) is not None:
            out["comfy_dir"] = Path(v)
        if (v := get("comfy_url", "COMFYUI_URL")) is not None:
            out["comfy_url"] = v
        if (v := get("comfy_args", "COMFYUI_ARGS")) is not None:
            out["comfy_args"] = v
        if (v := get("comfy_python")) is not None:
            out["comfy_python"] = v
        if (v := get("comfy_ready_timeout")) is not None:
            out["comfy_ready_timeout"] = float(v)
        if (v := get("model_roots")) is not None:
            out["model_roots"] = _paths(v)
        if (v := get("volume_bases")) is not None:
            out["volume_bases"] = _paths(v)
        if (v := get("data_dir")) is not None:
            out["data_dir"] = Path(v)
        if (v := get("log_level")) is not None:
            out["log_level"] = v
        if (v := get("log_json")) is not None:
            out["log_json"] = _bool(v)
        return cls(**out)  # type: ignore[arg-type]


def _paths(text: str) -> list[Path]:
    value = split_list(text)  # the forms Settings accepts: a,b or ["a","b"]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"expected {LIST_FORM} of paths, got {text!r}")
    return [Path(p) for p in value]


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE | _FALSE:
        return low in _TRUE
    raise ValueError(f"expected a boolean, got {text!r}")


@dataclass(frozen=True)
class Launched:
    settings: LaunchSettings
    supervisor: Supervisor | None  # None: ComfyUI is not ours to launch (COMFYUI_URL only)
    swarm: SwarmProcess | None = None  # SwarmUI installed on the volume and launched by us


_launched: Launched | None = None


def launch() -> Launched:
    """Configure logging and start ComfyUI, once per process: later calls return the first
    launch. Raises ValueError (nothing started) when the environment holds a bad value."""
    global _launched
    if _launched is None:
        from comfyfleet.worker import logs

        early = LaunchSettings.from_env()
        logs.configure(early.log_level, json_lines=early.log_json)
        provisioned = provision_volume()
        if provisioned is not None:
            early = replace(
                early, comfy_dir=provisioned.comfy_dir, comfy_python=str(provisioned.venv_python)
            )
        supervisor = start_comfy(early)
        if supervisor is not None:  # also when the command line turns out to be wrong
            atexit.register(supervisor.stop)
        swarm = start_swarm(provisioned) if provisioned is not None else None
        if swarm is not None:
            atexit.register(swarm.stop)
        _launched = Launched(early, supervisor, swarm)
    return _launched


def launched_swarm() -> SwarmProcess | None:
    """The SwarmUI this process launched, if any (for the worker's actions)."""
    return _launched.swarm if _launched is not None else None


def provision_volume(environ: Mapping[str, str] | None = None) -> ProvisionConfig | None:
    """With ``COMFYFLEET_PROVISION=auto``: make sure ComfyUI (and SwarmUI) are installed on the
    volume — a warm volume costs one small file read — and point this process's settings at
    them (COMFYUI_DIR, COMFYFLEET_COMFY_PYTHON, SWARMUI_URL, which the provisioned copy
    overrides). None when provisioning is off. A failed install logs one line and exits 1: the
    next start resumes at the step that failed. Raises ValueError on a bad setting."""
    env = os.environ if environ is None else environ
    mode = next((v for k, v in env.items() if k.lower() == "comfyfleet_provision"), "off")
    if mode.strip().lower() != "auto":
        if mode.strip().lower() not in ("off", ""):
            raise ValueError(f"COMFYFLEET_PROVISION={mode!r}: expected off or auto")
        return None
    import logging

    from comfyfleet.errors import ProvisionError
    from comfyfleet.runtime import provision
    from comfyfleet.runtime.provision_config import ProvisionConfig

    config = ProvisionConfig.from_env(env)
    try:
        result = provision.ensure(config)
    except ProvisionError as exc:
        logging.getLogger("comfyfleet.provision").error("provisioning failed: %s", exc)
        raise SystemExit(1) from None
    logging.getLogger("comfyfleet.provision").info(
        "volume provisioned" if not result.warm else "volume is provisioned; starting warm",
        extra={"root": str(config.root), "seconds": round(result.seconds, 3)},
    )
    if environ is None:
        os.environ["COMFYFLEET_COMFY_DIR"] = str(config.comfy_dir)
        os.environ["COMFYFLEET_COMFY_PYTHON"] = str(config.venv_python)
        if config.swarm is not None:
            os.environ["COMFYFLEET_SWARM_URL"] = f"http://127.0.0.1:{config.swarm.port}"
    return config


def start_swarm(config: ProvisionConfig) -> SwarmProcess | None:
    """Launch the provisioned SwarmUI, supervised from a background thread."""
    if config.swarm is None:
        return None
    from comfyfleet.runtime.swarmui import SwarmProcess

    timeout = float(os.environ.get("COMFYFLEET_SWARMUI_READY_TIMEOUT", "600"))
    swarm = SwarmProcess(
        config.swarm_dir,
        config.swarm.launch,
        port=config.swarm.port,
        log_file=config.state_dir.parent / "logs" / "swarmui.log",
        ready_timeout=timeout,
    )
    swarm.start()
    return swarm


def start_comfy(launch: LaunchSettings) -> Supervisor | None:
    """Launch ComfyUI from COMFYUI_DIR (after wiring volume models); None to use COMFYUI_URL."""
    if launch.comfy_dir is None:
        return None
    from comfyfleet.comfy.supervisor import Supervisor

    args = launch.comfy_args
    extra = write_model_paths(launch)
    if extra is not None and extra.parent != launch.comfy_dir.resolve():  # else auto-loaded
        args += f" --extra-model-paths-config {shlex.quote(str(extra))}"
    supervisor = Supervisor(
        launch.comfy_dir,
        launch.comfy_url,
        args=args,
        python=launch.comfy_python,
        ready_timeout=launch.comfy_ready_timeout,
    )
    supervisor.start()
    return supervisor


def write_model_paths(settings: PathSettings) -> Path | None:
    """Write ``extra_model_paths.yaml`` for the network volume's model roots, if any.

    It goes into COMFYUI_DIR unless a hand-written file is already there; then it goes under
    the data dir and is passed with ``--extra-model-paths-config``.
    """
    from comfyfleet.models.volumes import detect_roots

    assert settings.comfy_dir is not None
    roots = detect_roots(settings.model_roots, bases=settings.volume_bases).roots
    if not roots:
        return None
    from comfyfleet.models.paths import HEADER, build_config, render, write_if_changed

    dest = settings.comfy_dir.resolve() / "extra_model_paths.yaml"
    if dest.exists() and not dest.read_text(encoding="utf-8").startswith(HEADER):
        dest = settings.data_dir.resolve() / "extra_model_paths.yaml"
    write_if_changed(dest, render(build_config(roots)))
    return dest
