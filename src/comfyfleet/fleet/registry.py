"""The remote pull agents that called in, and the one state every view shows for a backend.

An agent is registered by its first claim and kept fresh by every call it makes. One that
stops calling in reads ``offline`` (not healthy) after `offline_after` seconds and is forgotten
after `expire_after` (``COMFYFLEET_AGENT_EXPIRY_SECONDS``) unless it still holds a task or a
claim; what it executed and failed stays in the `Retired` totals, so counters never go back.
Without expiry every name anyone ever claimed with (a typo, a fuzzer) would stay a "worker".

`consistent` turns a `Backend.snapshot()` into what the API, both metrics endpoints and the
dashboard show: one ``state`` (``starting`` until the first health check passes, ``offline``
for a silent agent) that never contradicts ``healthy``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.fleet.backend import Backend


@dataclass
class Retired:
    """What the agents forgotten so far had done."""

    agents: int = 0
    executed: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"agents": self.agents, "executed": self.executed, "failed": self.failed}


def consistent(snapshot: dict[str, Any], *, offline: bool = False) -> dict[str, Any]:
    """The snapshot with its one state: ``offline`` and ``starting`` are not healthy, and a
    backend that never passed a health check is ``starting``, not ``unhealthy``."""
    if offline:
        snapshot["state"] = "offline"
    elif snapshot.get("state") == "unhealthy" and not snapshot.get("failures"):
        snapshot["state"] = "starting"
    if snapshot.get("state") in ("offline", "starting", "unhealthy", "stopped"):
        snapshot["healthy"] = False
    return snapshot


class RemoteAgents(Mapping[str, Backend]):
    """Remote agents by name; `touch` on every call from one, `prune` now and then."""

    def __init__(
        self,
        *,
        offline_after: float,
        expire_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.offline_after = offline_after
        self.expire_after = expire_after
        self.clock = clock
        self.retired = Retired()
        self._agents: dict[str, Backend] = {}

    def __getitem__(self, name: str) -> Backend:
        return self._agents[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def touch(self, name: str) -> Backend:
        """The agent's entry, created on its first call; marks it seen now."""
        backend = self._agents.get(name)
        if backend is None:
            backend = self._agents[name] = Backend(name, kind="remote", healthy=True)
        backend.last_seen = self.clock()
        return backend

    def seen(self, name: str) -> Backend | None:
        """Like `touch` for an agent already known; None (and nothing created) otherwise."""
        backend = self._agents.get(name)
        if backend is not None:
            backend.last_seen = self.clock()
        return backend

    def silent_for(self, backend: Backend) -> float:
        seen = backend.last_seen
        return float("inf") if seen is None else self.clock() - seen

    def busy(self, backend: Backend) -> bool:
        """Holds a task or has a claim in flight: it is there even if it does not call."""
        return bool(backend.running or backend.delivering or backend.claiming)

    def offline(self, backend: Backend) -> bool:
        return not self.busy(backend) and self.silent_for(backend) > self.offline_after

    def prune(self) -> list[str]:
        """Forget agents silent for longer than `expire_after`; their names."""
        gone = [
            name
            for name, backend in self._agents.items()
            if not self.busy(backend) and self.silent_for(backend) > self.expire_after
        ]
        for name in gone:
            backend = self._agents.pop(name)
            backend.stop()  # a claim still waiting on it (there is none: not busy) would end
            self.retired.agents += 1
            self.retired.executed += backend.executed
            self.retired.failed += backend.failed
        return gone

    def snapshots(self) -> list[dict[str, Any]]:
        """Consistent snapshots of the agents still known (after pruning)."""
        self.prune()
        return [
            consistent(backend.snapshot(), offline=self.offline(backend))
            for backend in self._agents.values()
        ]
