"""Child processes that run in a process group of their own and never outlive us.

Every supervisor here (ComfyUI's, SwarmUI's) launches its server with ``start_new_session=True``
and `DIE_WITH_PARENT`, so a SIGKILLed worker leaves no orphan, and stops it through its whole
group, so the server's own children go with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

_PRCTL: Callable[[int, int], int] | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    assert _PRCTL is not None
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the parent, even on SIGKILL


# ``preexec_fn`` for Popen: the child is killed when we die (None where prctl is missing).
DIE_WITH_PARENT: Callable[[], None] | None = _die_with_parent if _PRCTL else None


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group ``proc`` leads (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the group, then SIGKILL it if ``proc`` has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
