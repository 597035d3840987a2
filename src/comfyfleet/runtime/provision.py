"""Install ComfyUI (and SwarmUI) onto the volume once; start warm from it ever after.

Layout under the provision dir (a network volume): ``ComfyUI/`` (a git checkout at the pinned
ref, custom nodes in ``ComfyUI/custom_nodes/<name>``), ``venv/`` (ComfyUI's Python environment,
so the container's own stays small), ``SwarmUI/`` when enabled, and ``.comfyfleet/provision/``:

- ``steps/<step>.json`` — one marker per finished step, holding the step's *key* (what it was
  made from: URL, ref, commit, the requirements file's hash). A step whose marker matches is
  skipped, so a run that crashed halfway resumes at the step it died in, and a changed ref
  redoes exactly the steps that depend on it (git fetch + checkout, requirements again);
- ``installed.json`` — written last, recording the pinned versions. A start that finds it
  matching the configuration is *warm*: `check` reads one small file and two ``stat`` calls,
  and nothing touches git, pip or the network;
- ``lock`` — a file lock (filelock): of two workers starting at once on one volume, one
  installs while the other waits, then finds the marker and starts warm;
- ``logs/<step>.log`` — every command's full output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from comfyfleet.errors import ProvisionError
from comfyfleet.runtime import provision_tools as tools
from comfyfleet.runtime.provision_config import ProvisionConfig, Source

log = logging.getLogger("comfyfleet.provision")

MARKER_VERSION = 1
VENV_ID = ".comfyfleet-id"  # changes whenever the venv is made anew: requirements go in again


@dataclass(frozen=True)
class Status:
    """What `check` found: ``warm`` (start now) or why not."""

    warm: bool
    reason: str
    installed: dict[str, Any] | None = None


@dataclass
class StepResult:
    name: str
    status: str  # "done" | "skipped"
    seconds: float
    detail: str = ""


@dataclass
class Result:
    warm: bool  # nothing had to be installed
    waited: bool = False  # another process held the lock and finished the job
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    installed: dict[str, Any] | None = None


class Reporter(Protocol):
    def start(self, total: int) -> None: ...
    def begin(self, name: str, what: str) -> None: ...
    def end(self, result: StepResult) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class LineReporter:
    """One line per step (logs, pipes): ``provision: comfyui: done in 2.1 s (...)``."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.write = write or log.info

    def start(self, total: int) -> None:
        pass

    def begin(self, name: str, what: str) -> None:
        pass

    def end(self, r: StepResult) -> None:
        how = f"done in {r.seconds:.1f} s" if r.status == "done" else "already done"
        self.write(f"provision: {r.name}: {how}" + (f" ({r.detail})" if r.detail else ""))

    def note(self, text: str) -> None:
        self.write(f"provision: {text}")

    def close(self) -> None:
        pass


# --- markers ----------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    """Atomic and durable: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _marker(config: ProvisionConfig, step: str) -> Path:
    safe = step.replace(":", "--").replace("/", "_")
    return config.state_dir / "steps" / f"{safe}.json"


def _log(config: ProvisionConfig, step: str) -> Path:
    return config.state_dir / "logs" / f"{step.replace(':', '--')}.log"


def check(config: ProvisionConfig) -> Status:
    """Warm when the final marker records exactly the configured pins and the checkout and
    its Python are there. No subprocess, no network."""
    installed = _read_json(config.state_dir / "installed.json")
    if not isinstance(installed, dict) or installed.get("version") != MARKER_VERSION:
        return Status(False, f"{config.root} is not provisioned yet")
    if installed.get("pinned") != config.pinned():
        return Status(
            False,
            "the pinned versions changed: " + _diff(installed.get("pinned"), config.pinned()),
            installed,
        )
    needed = [config.comfy_dir / "main.py", config.venv_python]
    if config.swarm is not None:
        needed.append(config.swarm_dir / ".git")
    for path in needed:
        if not path.exists():
            return Status(False, f"{path} is missing", installed)
    return Status(True, "provisioned", installed)


def _diff(old: Any, new: dict[str, Any]) -> str:
    old = old if isinstance(old, dict) else {}
    changes = []
    for key in new:
        if old.get(key) != new[key]:
            changes.append(f"{key} {_short(old.get(key))} -> {_short(new[key])}")
    return "; ".join(changes) or "marker differs"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("ref"))
    if isinstance(value, list):
        return "[" + ", ".join(f"{n.get('name')}@{n.get('ref')}" for n in value) + "]"
    return str(value)


# --- steps ----------------------------------------------------------------------------------
@dataclass
class Step:
    name: str
    what: str  # shown while it runs
    key: Callable[[], dict[str, Any]]
    run: Callable[[], str]  # returns a one-line detail
    present: Callable[[], bool] = lambda: True


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _git_step(config: ProvisionConfig, name: str, src: Source, dest: Path) -> Step:
    def run() -> str:
        commit = tools.git_checkout(name, dest, src.url, src.ref, _log(config, name))
        if src.commit and commit != src.commit:
            raise ProvisionError(
                f"{name}: {src.url} at {src.ref} is commit {commit}, expected {src.commit} "
                "(a moved tag?); set the commit or the ref you mean",
                step=name,
            )
        return f"{src.ref} = {commit[:12]}"

    return Step(name, f"fetching {src.url} at {src.ref}", src.pinned, run, (dest / ".git").is_dir)


def _requirements_step(config: ProvisionConfig, name: str, checkout: Path, file: str) -> Step:
    req = checkout / file

    def key() -> dict[str, Any]:
        venv = _venv_key() | {"id": _read_text(config.venv_dir / VENV_ID)}  # a new venv is empty
        return {"commit": tools.head(checkout), "sha256": _sha(req), "venv": venv}

    def run() -> str:
        if not req.is_file():
            return f"no {file}"
        tools.pip_install(name, config.venv_python, req, config.pip_options(), _log(config, name))
        return f"pip install -r {file}"

    return Step(name, f"pip install -r {req.relative_to(config.root)}", key, run)


def _venv_key() -> dict[str, Any]:
    import sys

    return {"python": ".".join(map(str, sys.version_info[:3]))}


def _model_paths_step(config: ProvisionConfig) -> Step:
    from comfyfleet.models.paths import HEADER, build_config, render, write_if_changed
    from comfyfleet.models.volumes import detect_roots

    dest = config.comfy_dir / "extra_model_paths.yaml"

    def text() -> str | None:
        bases = list(dict.fromkeys([*config.extra_model_bases, config.root]))
        roots = detect_roots(config.model_roots, bases=bases).roots
        return render(build_config(roots)) if roots else None

    def run() -> str:
        body = text()
        if body is None:
            return "no model roots found; ComfyUI uses its models/ dir"
        if dest.exists() and not dest.read_text(encoding="utf-8").startswith(HEADER):
            return f"kept the hand-written {dest.name}"
        write_if_changed(dest, body)
        return f"wrote {dest.relative_to(config.root)}"

    return Step("model-paths", "writing extra_model_paths.yaml", lambda: {"yaml": text()}, run)


def _build_step(config: ProvisionConfig) -> Step:
    assert config.swarm is not None
    spec, dest = config.swarm, config.swarm_dir

    def run() -> str:
        if not spec.build.strip():
            return "no build step configured"
        tools.shell("swarmui-build", spec.build, dest, _log(config, "swarmui-build"))
        bin_dir = dest / "src" / "bin"
        if bin_dir.is_dir():  # launch-linux.sh rebuilds when this differs from HEAD
            (bin_dir / "last_build").write_text(tools.head(dest), encoding="utf-8")
        return spec.build

    return Step(
        "swarmui-build",
        f"building SwarmUI: {spec.build}",
        lambda: {"commit": tools.head(dest), "build": spec.build},
        run,
    )


def plan(config: ProvisionConfig) -> list[Step]:
    """The steps in order; keys are computed when a step comes up (after what it depends on)."""

    def venv() -> str:
        tools.make_venv("venv", config.venv_dir, _log(config, "venv"))
        (config.venv_dir / VENV_ID).write_text(uuid.uuid4().hex, encoding="utf-8")
        return str(config.venv_dir.relative_to(config.root))

    steps = [
        _git_step(config, "comfyui", config.comfyui, config.comfy_dir),
        Step("venv", "creating the Python environment", _venv_key, venv, config.venv_python.exists),
        _requirements_step(config, "comfyui-requirements", config.comfy_dir, "requirements.txt"),
    ]
    for node in config.nodes:
        dest = config.comfy_dir / "custom_nodes" / node.name
        steps.append(_git_step(config, f"node:{node.name}", node, dest))
        steps.append(
            _requirements_step(config, f"node:{node.name}:requirements", dest, node.requirements)
        )
    steps.append(_model_paths_step(config))
    if config.swarm is not None:
        steps.append(_git_step(config, "swarmui", config.swarm.source, config.swarm_dir))
        steps.append(_build_step(config))
    return steps


# --- the whole thing ---------------------------------------------------------------------------
def ensure(
    config: ProvisionConfig, reporter: Reporter | None = None, *, lock_timeout: float = 3600.0
) -> Result:
    """Warm → return at once. Otherwise take the lock, re-check (another worker may have just
    finished), run the steps that are not done, and write the final marker last."""
    started = time.perf_counter()
    status = check(config)
    if status.warm:
        return Result(warm=True, seconds=time.perf_counter() - started, installed=status.installed)
    from filelock import FileLock, Timeout

    reporter = reporter or LineReporter()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(config.state_dir / "lock"))
    holder = config.state_dir / "lock.holder"
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        reporter.note(f"waiting for {_read_text(holder) or 'another process'} to finish installing")
        try:
            lock.acquire(timeout=lock_timeout)
        except Timeout:
            raise ProvisionError(
                f"another process has held {config.state_dir / 'lock'} for {lock_timeout:.0f} s",
                step="lock",
            ) from None
    try:
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()}", encoding="utf-8")
        status = check(config)
        if status.warm:
            reporter.note("another process installed it meanwhile; nothing to do")
            return Result(
                True, True, seconds=time.perf_counter() - started, installed=status.installed
            )
        reporter.note(status.reason)
        (config.state_dir / "installed.json").unlink(missing_ok=True)  # mid-upgrade is not warm
        result = Result(warm=False, waited=waited)
        steps = plan(config)
        reporter.start(len(steps))
        for step in steps:
            result.steps.append(_run_step(config, step, reporter))
        installed = {
            "version": MARKER_VERSION,
            "pinned": config.pinned(),
            "commits": _commits(config),
            "python": _venv_key()["python"],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "steps": {s.name: round(s.seconds, 3) for s in result.steps},
        }
        _write_json(config.state_dir / "installed.json", installed)
        result.installed = installed
        result.seconds = time.perf_counter() - started
        return result
    finally:
        holder.unlink(missing_ok=True)
        lock.release()
        reporter.close()


def _run_step(config: ProvisionConfig, step: Step, reporter: Reporter) -> StepResult:
    marker = _marker(config, step.name)
    saved = _read_json(marker)
    t0 = time.perf_counter()
    if isinstance(saved, dict) and step.present() and saved.get("key") == step.key():
        result = StepResult(step.name, "skipped", 0.0, saved.get("detail", ""))
        reporter.end(result)
        return result
    reporter.begin(step.name, step.what)
    marker.unlink(missing_ok=True)
    detail = step.run()
    result = StepResult(step.name, "done", time.perf_counter() - t0, detail)
    _write_json(marker, {"key": step.key(), "detail": detail, "seconds": round(result.seconds, 3)})
    reporter.end(result)
    return result


def _commits(config: ProvisionConfig) -> dict[str, str]:
    out = {"ComfyUI": tools.head(config.comfy_dir)}
    for node in config.nodes:
        out[node.name] = tools.head(config.comfy_dir / "custom_nodes" / node.name)
    if config.swarm is not None:
        out["SwarmUI"] = tools.head(config.swarm_dir)
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
