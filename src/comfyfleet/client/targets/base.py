"""What every target (gateway, RunPod endpoint, worker local API, bare ComfyUI) does for the
SDK. A target speaks its own protocol; the SDK's `AsyncJob` only sees these five calls."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.client.results import ProgressEvent, Result
from comfyfleet.jobs import JobSpec


@dataclass
class SubmitOptions:
    """Queue options a target may honour (the gateway does; others ignore what they lack)."""

    priority: int | None = None
    webhook: str | None = None
    idempotency_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Target(abc.ABC):
    kind: str
    #: True when `follow` is fed by pushed events; False when it polls.
    streams: bool = False

    @abc.abstractmethod
    async def submit(self, spec: JobSpec, options: SubmitOptions) -> str:
        """Send the job; its id on this target."""

    @abc.abstractmethod
    def follow(self, job_id: str) -> AsyncIterator[ProgressEvent | Result]:
        """Progress events, then exactly one final `Result` (then the iterator ends)."""

    @abc.abstractmethod
    async def status(self, job_id: str) -> ProgressEvent | Result:
        """Where the job is now: a `Result` when finished, else its latest progress."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> None:
        """Ask the target to stop the job (a no-op if it has finished)."""

    async def download(self, url: str, path: Path) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None
