"""Memory and disk checks around each job.

A job that starts on a worker with too little memory is killed by the OOM killer mid-run and the
caller sees a vanished worker; refusing it up front with `ResourceExhausted` (retryable) lets the
queue send it elsewhere. Inside a container, ``psutil`` reports the host's memory, so the cgroup
limit is read too and the smaller figure wins.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from comfyfleet.errors import ResourceExhausted

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number


@dataclass(frozen=True)
class Resources:
    free_memory_bytes: int
    memory_source: str  # "cgroup" or "host"
    free_disk_bytes: int
    disk_path: str

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_inactive_file(stat: Path) -> int:
    """Page cache the kernel reclaims before OOM-killing; not really used memory."""
    try:
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_free_memory(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes left under this container's memory limit, or None without a limit."""
    for limit_f, usage_f, stat_f in (
        (root / "memory.max", root / "memory.current", root / "memory.stat"),  # v2
        (
            root / "memory" / "memory.limit_in_bytes",
            root / "memory" / "memory.usage_in_bytes",
            root / "memory" / "memory.stat",
        ),  # v1
    ):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is None or usage is None or limit >= _UNLIMITED:
            continue
        return max(0, limit - (usage - _cgroup_inactive_file(stat_f)))
    return None


def free_memory() -> tuple[int, str]:
    host = psutil.virtual_memory().available
    cgroup = cgroup_free_memory()
    if cgroup is not None and cgroup < host:
        return cgroup, "cgroup"
    return host, "host"


def free_disk(paths: list[Path]) -> tuple[int, str]:
    """The tightest free space among the directories a job writes to."""
    best: tuple[int, str] | None = None
    for path in paths:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = psutil.disk_usage(str(probe)).free
        if best is None or free < best[0]:
            best = (free, str(path))
    return best or (psutil.disk_usage(os.getcwd()).free, os.getcwd())


def measure(paths: list[Path]) -> Resources:
    mem, source = free_memory()
    disk, where = free_disk(paths)
    return Resources(mem, source, disk, where)


def check(paths: list[Path], *, min_memory: int, min_disk: int, when: str) -> Resources:
    """Raise `ResourceExhausted` naming the resource, what is free and what is required."""
    res = measure(paths)
    log.info("resources %s", when, extra=res.as_dict())
    if res.free_memory_bytes < min_memory:
        raise ResourceExhausted(
            f"not enough free memory {when} the job: {_mib(res.free_memory_bytes)} free "
            f"({res.memory_source}), {_mib(min_memory)} required",
            resource="memory",
            free_bytes=res.free_memory_bytes,
            required_bytes=min_memory,
            source=res.memory_source,
        )
    if res.free_disk_bytes < min_disk:
        raise ResourceExhausted(
            f"not enough free disk {when} the job: {_mib(res.free_disk_bytes)} free on "
            f"{res.disk_path}, {_mib(min_disk)} required",
            resource="disk",
            free_bytes=res.free_disk_bytes,
            required_bytes=min_disk,
            path=res.disk_path,
        )
    return res


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"
