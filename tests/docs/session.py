"""The shell a document's examples run in: a temp dir seeded with docs/examples, free ports.

Every ``$ command`` runs in its own ``bash -c``, stdout and stderr merged in one pipe as a
terminal shows them; exported variables and the working directory are carried from one
command to the next as in one terminal. Background commands are started in their own process
group and stopped when the session closes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .transcript import ANY_LINES, Step, explain, line_regex, matches, normalize_output

# Ports the docs use; each session maps each of them to a free port of this machine.
DOC_PORTS = (8000, 8080, 8090, 8188, 9999)
# Only where a number is a port: host:PORT, --port PORT / --port=PORT.
_PORT_IN_COMMAND = r"(?:(?<=[^\"]:)|(?<=--port )|(?<=--port=)){port}(?!\d)"
COMMAND_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
# Settings a developer's shell may have that would change what the examples print.
_DROPPED_ENV = ("COMFYFLEET_", "COMFYUI_", "RUNPOD_", "BUCKET_", "SWARMUI_", "MODELS")


class StepFailed(AssertionError):
    """A documented command printed something else, failed, or never got ready."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the command's process group (servers it started too), SIGKILL if it stays."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _printed_last_line(expected: tuple[str, ...], actual: tuple[str, ...]) -> bool:
    """The shown output's last line (the ready line) was printed: waiting longer is useless."""
    shown = [line for line in expected if line.strip() != ANY_LINES]
    return bool(shown) and any(line_regex(shown[-1]).fullmatch(a) for a in actual)


class Background:
    """A ``cmd &``: its output is collected by a thread so the pipe never fills."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, expected: tuple[str, ...], translate, timeout: float) -> None:
        """Until the shown lines are what it printed first; fails if it exits or times out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                actual = normalize_output(translate("\n".join(self.lines)))
                if matches(expected, actual, prefix=True):
                    return
                if _printed_last_line(expected, actual):
                    raise StepFailed(
                        "printed the doc's last line, but what came before differs\n"
                        + explain(expected, actual)
                    )
                left = deadline - time.monotonic()
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise StepFailed(
                        f"exited with {self.process.returncode} before printing what the doc"
                        f" shows\n{explain(expected, actual)}"
                    )
                if left <= 0:
                    raise StepFailed(
                        f"not ready within {timeout:.0f} s\n{explain(expected, actual)}"
                    )
                self._changed.wait(min(left, 0.5))

    def stop(self) -> None:
        _kill_group(self.process)
        self._reader.join(timeout=5)


class Session:
    """One document's examples share this: cwd, environment, ports, background processes."""

    def __init__(self, examples_dir: Path, bin_dir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="comfyfleet-docs-"))
        shutil.copytree(examples_dir, self.dir, dirs_exist_ok=True)
        # The shell state between commands lives outside the dir the examples list.
        self._state_dir = Path(tempfile.mkdtemp(prefix="comfyfleet-docs-state-"))
        self._exports = self._state_dir / "exports.sh"
        self._cwd = self._state_dir / "cwd"
        self._exports.write_text("")
        self._cwd.write_text(str(self.dir))
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(bin_dir.parent)
        env["PYTHONUNBUFFERED"] = "1"  # the order a terminal would show
        env["COLUMNS"] = "100"
        self.env = env
        self.ports: dict[int, int] = {}
        self.background: list[Background] = []

    def _command(self, text: str) -> str:
        for doc_port in DOC_PORTS:
            pattern = _PORT_IN_COMMAND.format(port=doc_port)
            if re.search(pattern, text):
                real = self.ports.setdefault(doc_port, _free_port())
                text = re.sub(pattern, str(real), text)
        return text

    def translate(self, output: str) -> str:
        """Real ports back to the documented ones, so outputs read as in the docs."""
        for doc_port, real in self.ports.items():
            output = re.sub(rf"(?<![\d.]){real}(?![\d.])", str(doc_port), output)
        return output

    def _script(self, command: str, *, keep_state: bool) -> list[str]:
        exports, cwd = shlex.quote(str(self._exports)), shlex.quote(str(self._cwd))
        prelude = f'. {exports}; cd "$(cat {cwd})"\n'
        if keep_state:
            save = f"export -p > {exports}; pwd > {cwd}"
            prelude += f"trap {shlex.quote(save)} EXIT\n"
        return ["bash", "-c", prelude + command]

    def run(self, step: Step) -> None:
        command = self._command(step.foreground_command)
        if step.background:
            bg = Background(self._script(command, keep_state=False), self.dir, self.env)
            self.background.append(bg)
            bg.wait_for(step.expected, self.translate, READY_TIMEOUT)
            return
        process = subprocess.Popen(
            self._script(command, keep_state=True),
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # on a timeout, its children go too
        )
        try:
            output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            output, _ = process.communicate()
            actual = normalize_output(self.translate(output))
            raise StepFailed(
                f"still running after {COMMAND_TIMEOUT:.0f} s (a server? end the command with"
                f" ' &')\n{explain(step.expected, actual)}"
            ) from None
        actual = normalize_output(self.translate(output))
        if process.returncode != 0:
            raise StepFailed(
                f"exit status {process.returncode} (show an expected failure with"
                f' `; echo "exit=$?"`)\n{explain(step.expected, actual)}'
            )
        if not matches(step.expected, actual):
            raise StepFailed(explain(step.expected, actual))

    def close(self) -> None:
        for bg in reversed(self.background):
            bg.stop()
        self.background.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self._state_dir, ignore_errors=True)
