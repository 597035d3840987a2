"""The commands provisioning runs: git, venv, pip and a build step, each logged to a file.

Each helper is idempotent on its own (a re-run after a crash finds a half-made directory and
finishes or redoes it), and a failure raises `ProvisionError` naming the step, the command and
the last lines it printed; the whole output stays in the step's log file on the volume.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from comfyfleet.errors import ProvisionError

TAIL_LINES = 15
_ERROR_PREFIXES = ("fatal:", "error:", "ERROR:")  # git's and pip's own summary lines


def run(step: str, argv: Sequence[str], log: Path, *, cwd: Path | None = None) -> str:
    """Run ``argv``, appending its output to ``log``; return its stdout+stderr text."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        except OSError as exc:
            raise ProvisionError(
                f"{step}: cannot run {argv[0]}: {exc}", step=step, command=shlex.join(argv)
            ) from None
        out.write(proc.stdout)
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        tail = list(deque((ln for ln in text.splitlines() if ln.strip()), TAIL_LINES))
        errors = [ln.strip() for ln in tail if ln.lstrip().startswith(_ERROR_PREFIXES)]
        last = "; ".join(errors[-3:]) or (tail[-1] if tail else f"exit code {proc.returncode}")
        raise ProvisionError(
            f"{step}: `{shlex.join(argv)}` failed: {last} (full output: {log})",
            step=step,
            command=shlex.join(argv),
            exit_code=proc.returncode,
            tail=tail,
        )
    return text


def git_checkout(step: str, dest: Path, url: str, ref: str, log: Path) -> str:
    """Make ``dest`` a checkout of ``url`` at ``ref`` (fetching only that ref); its commit.

    Works on an empty dir, a half-made clone and an older checkout alike: ``git init`` is
    idempotent, the fetch names the URL directly and the checkout is forced and detached."""
    dest.mkdir(parents=True, exist_ok=True)
    run(step, ["git", "init", "-q", str(dest)], log)
    run(step, ["git", "-C", str(dest), "fetch", "-q", "--depth", "1", url, ref], log)
    run(step, ["git", "-C", str(dest), "checkout", "-q", "--force", "--detach", "FETCH_HEAD"], log)
    return head(dest)


def head(dest: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def host_pip() -> bool:
    """Whether this interpreter's pip can install into another one (``pip --python``)."""
    return importlib.util.find_spec("pip") is not None


def make_venv(step: str, dest: Path, log: Path) -> None:
    """A fresh venv at ``dest`` from this interpreter's Python (a half-made one is cleared).

    Without pip of its own when ours can drive it (``pip --python``: seconds faster and
    smaller); with pip otherwise (the image's uv-made venv has none)."""
    argv = [_base_python(), "-m", "venv", "--clear"]
    if host_pip():
        argv.append("--without-pip")
    run(step, [*argv, str(dest)], log)


def _base_python() -> str:
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable


def pip_install(step: str, python: Path, requirements: Path, options: Sequence[str], log: Path):
    """``pip install -r requirements`` into ``python``'s environment."""
    if host_pip():
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
    else:
        pip = [str(python), "-m", "pip"]
    argv = [*pip, "install", "--no-input", "--progress-bar", "off", *options]
    run(step, [*argv, "-r", str(requirements)], log, cwd=requirements.parent)


def shell(step: str, command: str, cwd: Path, log: Path) -> None:
    """A configured build command, split like a shell would (no shell features)."""
    argv = shlex.split(command)
    found = shutil.which(argv[0], path=f"{cwd}:{os.environ.get('PATH', '')}") if argv else ""
    if found is None and not (cwd / argv[0]).exists():
        raise ProvisionError(
            f"{step}: `{argv[0]}` is not installed (needed for `{command}`)", step=step
        )
    run(step, argv, log, cwd=cwd)
