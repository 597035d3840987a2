"""Is this box fit to run ComfyUI jobs? Volume, model paths, disk, memory, GPU, ComfyUI.

Each check returns a `Check` with a status: ``ok``, ``warn`` (works, but look at it), ``fail``
(jobs will fail), ``absent`` (not present and not required: a GPU on a CPU box) or ``skipped``.
The report's status is ``fail`` if any check failed, ``degraded`` if any warned, else ``ok``.
The JSON shape is documented in docs/runtime.md and kept stable for probes.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import psutil
import yaml

from comfyfleet.models.folders import CORE_FOLDERS
from comfyfleet.models.volumes import Detection, ModelRoot

CheckStatus = Literal["ok", "warn", "fail", "absent", "skipped"]
ReportStatus = Literal["ok", "degraded", "fail"]


@dataclass
class Check:
    name: str
    status: CheckStatus
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "data": self.data}


@dataclass
class Report:
    checks: list[Check]

    @property
    def status(self) -> ReportStatus:
        states = {c.status for c in self.checks}
        if "fail" in states:
            return "fail"
        return "degraded" if "warn" in states else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "checks": [c.to_dict() for c in self.checks]}


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_volume(found: Detection) -> Check:
    """Some model root must exist; a missing configured root is a failure (a typo or no mount)."""
    data = {
        "roots": [
            {"path": str(r.path), "layout": r.layout, "source": r.source} for r in found.roots
        ],
        "missing": [str(p) for p in found.missing],
    }
    if found.missing:
        return Check("volume", "fail", f"configured root missing: {found.missing[0]}", data)
    if not found.roots:
        return Check("volume", "warn", "no network volume or model root found", data)
    return Check(
        "volume", "ok", f"{len(found.roots)} model root(s), primary {found.roots[0].path}", data
    )


def check_model_paths(roots: Sequence[ModelRoot], extra_paths_file: Path | None) -> Check:
    """The YAML (when given) names real dirs; the primary root has ComfyUI's folders.

    Missing folders are fine for ComfyUI, so they are only listed; a root with none of them
    is probably the wrong directory.
    """
    data: dict[str, Any] = {
        "extra_model_paths": str(extra_paths_file) if extra_paths_file else None
    }
    if extra_paths_file is not None:
        try:
            config = yaml.safe_load(extra_paths_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            return Check("model_paths", "fail", f"cannot read {extra_paths_file}: {e}", data)
        bases = [str(s.get("base_path", "")) for s in config.values() if isinstance(s, dict)]
        gone = [b for b in bases if b and not os.path.isdir(b)]
        data["base_paths"] = bases
        if gone:
            return Check("model_paths", "fail", f"base_path does not exist: {gone[0]}", data)
    if not roots:
        return Check("model_paths", "skipped", "no model root", data)
    primary = roots[0]
    missing = [
        n for n in CORE_FOLDERS if not any((primary.path / d).is_dir() for d in primary.dirs_for(n))
    ]
    data["missing_folders"] = missing
    have = len(CORE_FOLDERS) - len(missing)
    detail = f"{have} of {len(CORE_FOLDERS)} core model folders in {primary.path}"
    if have == 0:
        return Check(
            "model_paths", "warn", detail + " (wrong dir? `comfyfleet paths --create`)", data
        )
    return Check("model_paths", "ok", detail, data)


def check_disk(paths: Sequence[Path], min_free: int) -> Check:
    """Free space on every dir that receives files (model roots, ComfyUI's dir)."""
    data: dict[str, Any] = {"min_free_bytes": min_free, "paths": {}}
    worst: tuple[int, str] | None = None
    for path in paths:
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = psutil.disk_usage(str(probe))
        data["paths"][str(path)] = {"free_bytes": usage.free, "total_bytes": usage.total}
        if worst is None or usage.free < worst[0]:
            worst = (usage.free, str(path))
    if worst is None:
        return Check("disk", "skipped", "no paths to check", data)
    detail = f"{_gib(worst[0])} free on {worst[1]}"
    if worst[0] < min_free:
        return Check("disk", "fail", f"{detail}, {_gib(min_free)} required", data)
    return Check("disk", "ok", detail, data)


def check_memory(min_free: int) -> Check:
    mem = psutil.virtual_memory()
    data = {"available_bytes": mem.available, "total_bytes": mem.total, "min_free_bytes": min_free}
    detail = f"{_gib(mem.available)} of {_gib(mem.total)} available"
    if mem.available < min_free:
        return Check("memory", "fail", f"{detail}, {_gib(min_free)} required", data)
    return Check("memory", "ok", detail, data)


_SMI_QUERY = "index,name,memory.total,memory.used,driver_version"


def check_gpu(
    nvidia_smi: str | None = None, device_glob: str = "/dev/nvidia[0-9]*", timeout: float = 10.0
) -> Check:
    """GPUs via nvidia-smi when on PATH, else device nodes; none is ``absent``, not an error."""
    smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
    devices = sorted(glob.glob(device_glob))
    data: dict[str, Any] = {"devices": devices}
    if smi:
        try:
            proc = subprocess.run(
                [smi, f"--query-gpu={_SMI_QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return Check("gpu", "warn", f"nvidia-smi did not run: {e}", data)
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            return Check(
                "gpu", "warn", f"nvidia-smi failed: {msg[0] if msg else proc.returncode}", data
            )
        gpus = []
        for line in proc.stdout.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 5:
                idx, name, total, used, driver = parts
                gpus.append(
                    {
                        "index": idx,
                        "name": name,
                        "memory_total_mib": _num(total),
                        "memory_used_mib": _num(used),
                        "driver": driver,
                    }
                )
        data["gpus"] = gpus
        names = ", ".join(g["name"] for g in gpus) or "none listed"
        return Check("gpu", "ok" if gpus else "warn", f"{len(gpus)} GPU(s): {names}", data)
    if devices:
        return Check("gpu", "ok", f"{len(devices)} NVIDIA device node(s), no nvidia-smi", data)
    return Check("gpu", "absent", "no NVIDIA GPU visible", data)


def _num(text: str) -> int | None:
    return int(text) if text.isdigit() else None


async def check_comfy(url: str, timeout: float = 5.0) -> Check:
    """ComfyUI answers ``GET /system_stats``."""
    data: dict[str, Any] = {"url": url}
    try:
        to = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=to) as session,
            session.get(url.rstrip("/") + "/system_stats") as resp,
        ):
            if resp.status != 200:
                return Check("comfyui", "fail", f"GET /system_stats answered {resp.status}", data)
            stats = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return Check(
            "comfyui", "fail", f"ComfyUI at {url} unreachable: {e or type(e).__name__}", data
        )
    system = stats.get("system", {})
    data["version"] = system.get("comfyui_version")
    data["devices"] = [d.get("name") for d in stats.get("devices", [])]
    return Check("comfyui", "ok", f"ComfyUI {data['version']} at {url}", data)


async def run_checks(
    found: Detection,
    *,
    comfy_url: str | None,
    extra_paths_file: Path | None = None,
    disk_paths: Sequence[Path] = (),
    min_free_disk: int = 0,
    min_free_memory: int = 0,
    nvidia_smi: str | None = None,
    device_glob: str = "/dev/nvidia[0-9]*",
) -> Report:
    """Every check, in a fixed order (the JSON's order)."""
    paths = [*(r.path for r in found.roots), *disk_paths] or [Path.cwd()]
    checks = [
        check_volume(found),
        check_model_paths(found.roots, extra_paths_file),
        check_disk(paths, min_free_disk),
        check_memory(min_free_memory),
        check_gpu(nvidia_smi, device_glob),
    ]
    if comfy_url:
        checks.append(await check_comfy(comfy_url))
    else:
        checks.append(Check("comfyui", "skipped", "not checked", {}))
    return Report(checks)
