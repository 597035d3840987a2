"""Importing the runpod SDK without its CPU probe.

``runpod.serverless.utils.rp_debugger`` calls ``cpuinfo.get_cpu_info()`` at import time, and
py-cpuinfo answers by running a second Python process: 1.2 s of the SDK's 2 s import, spent on a
box that is booting ComfyUI at the same moment, for a processor name that only appears in the
SDK's debug output. During the import the probe is swapped for the model name in
``/proc/cpuinfo`` (the same string on Linux), then restored.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any


def cpu_brand() -> str:
    """The processor's marketing name, cheaply."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or "unknown"


@contextlib.contextmanager
def _cheap_cpu_probe() -> Iterator[None]:
    try:
        import cpuinfo
    except ImportError:
        yield
        return
    real = cpuinfo.get_cpu_info

    def probe() -> dict[str, Any]:
        return {"brand_raw": cpu_brand(), "arch": platform.machine()}

    cpuinfo.get_cpu_info = probe
    try:
        yield
    finally:
        cpuinfo.get_cpu_info = real


def import_runpod() -> ModuleType:
    """``import runpod``, minus the probe (a no-op when runpod is already imported)."""
    if "runpod" in sys.modules:
        return sys.modules["runpod"]
    with _cheap_cpu_probe():
        import runpod
    return runpod
