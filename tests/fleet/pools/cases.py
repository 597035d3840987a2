"""One factory per provider for the contract suite: a pool spec that starts a working
"ComfyUI" (the project's test server) and one whose workers die at start."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.config import Settings
from comfyfleet.fleet.pools.provider import Provider, make_provider
from comfyfleet.fleet.pools.spec import PoolSpec, WorkerSpec

TEST_SERVER = "{python} -m comfyfleet.testing --port {port} --root {root} --cache none"
CRASH = "{python} -c \"import sys; print('boom at start', flush=True); sys.exit(3)\""


def local_options(job_seconds: float = 0.0) -> dict[str, str]:
    command = TEST_SERVER + (f" --job-seconds {job_seconds}" if job_seconds else "")
    return {"command": command, "python": sys.executable}


@dataclass
class Case:
    """How to make providers of one kind against one environment (a tmp dir, a stand-in)."""

    kind: str
    data_dir: Path
    good: dict[str, str]
    crashing: dict[str, str]
    settings: Settings = field(default_factory=Settings)
    has_logs: bool = True  # RunPod's API gives no container logs
    context: dict[str, Any] = field(default_factory=dict)
    made: list[Provider] = field(default_factory=list)
    # One owner per test: concurrent runs on one Docker daemon never see each other's workers.
    owner: str = field(default_factory=lambda: f"contract{uuid.uuid4().hex[:8]}")

    def provider(self, *, crash: bool = False, name: str = "p", **spec: Any) -> Provider:
        options = self.crashing if crash else self.good
        pool = PoolSpec(name=name, provider=self.kind, max=4, options=dict(options), **spec)
        provider = make_provider(
            pool, owner=self.owner, data_dir=self.data_dir, settings=self.settings
        )
        for key, value in self.context.items():
            setattr(provider, key, value)
        self.made.append(provider)
        return provider


def worker_spec(provider: Provider, worker_id: str, slot: int = 0) -> WorkerSpec:
    return WorkerSpec(
        pool=provider.pool.name,
        worker_id=worker_id,
        slot=slot,
        options=provider.pool.options,
        labels={"test": "contract"},
        data_dir=provider.data_dir,
    )


CaseFactory = Callable[[Path], AsyncIterator[Case]]
