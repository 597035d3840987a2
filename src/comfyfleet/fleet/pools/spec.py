"""Pool specs: what an operator writes (``NAME=PROVIDER:key=value,...`` or a JSON object) and
what a provider is asked to start (`WorkerSpec`).

Parsing is strict so a typo fails ``comfyfleet serve`` at start with one line naming the pool
and the key, instead of a pool that silently never scales.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.errors import InvalidRequest

PROVIDERS = ("local", "docker", "runpod")
# Keys every pool understands; everything else is the provider's (checked by the provider).
_COMMON = {
    "min": int,
    "max": int,
    "target": float,
    "cooldown": float,
    "start_timeout": float,
    "starts_per_minute": int,
    "unhealthy_after": float,
    "health_interval": float,
}
_PROVIDER_KEYS = {
    "local": {"command", "gpus", "workdir", "python", "keep_folders"},
    "docker": {"image", "command", "gpus", "volumes", "port", "network", "env"},
    "runpod": {"image", "gpu", "gpu_count", "port", "cloud", "volume_id", "env", "url"},
}


class PoolSpecError(InvalidRequest):
    """A pool spec cannot be used."""

    code = "invalid_pool"


@dataclass(frozen=True)
class PoolSpec:
    """One pool: a provider, bounds, and how eagerly it scales."""

    name: str
    provider: str
    min: int = 0
    max: int = 1
    target: float = 1.0  # queued + running tasks one worker should carry
    cooldown: float = 60.0  # seconds a worker stays idle before it is stopped
    start_timeout: float = 600.0  # seconds a worker may take to become healthy
    starts_per_minute: int = 10  # hard cap on start attempts
    unhealthy_after: float = 30.0  # failing health this long -> replaced
    health_interval: float = 2.0  # provider health probe of ready workers
    options: dict[str, str] = field(default_factory=dict)

    def desired(self, demand: int) -> int:
        """Workers wanted for ``demand`` queued + running tasks, within min..max."""
        want = math.ceil(demand / self.target) if demand > 0 else 0
        return max(self.min, min(self.max, want))

    def describe(self) -> str:
        """The spec back in flag form: bounds, every setting that is not the default, options."""
        defaults = PoolSpec(self.name, self.provider)
        tuned = "".join(
            f",{key}={getattr(self, key):g}"
            for key in _COMMON
            if key not in ("min", "max") and getattr(self, key) != getattr(defaults, key)
        )
        extra = "".join(f",{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}={self.provider}:min={self.min},max={self.max}{tuned}{extra}"


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker runs; built by the pool from its spec for every start."""

    pool: str
    worker_id: str
    slot: int  # 0..max-1: which GPU (local), which name suffix
    options: dict[str, str]
    labels: dict[str, str]
    data_dir: Path  # the worker's own folders live under here (local)
    env: dict[str, str] = field(default_factory=dict)


def parse_pool(entry: str | dict[str, Any]) -> PoolSpec:
    """``"gpu=local:min=0,max=2,command=..."`` or ``{"name": "gpu", "provider": "local", ...}``."""
    if isinstance(entry, dict):
        data = dict(entry)
    else:
        text = entry.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PoolSpecError(f"pool spec {text!r} is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise PoolSpecError(f"pool spec {text!r} must be a JSON object")
        else:
            data = _parse_flag(text)
    name = str(data.pop("name", "") or "").strip()
    provider = str(data.pop("provider", "") or "").strip()
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise PoolSpecError(f"pool spec {entry!r}: name must be letters, digits, - or _")
    if provider not in PROVIDERS:
        raise PoolSpecError(
            f"pool {name!r}: unknown provider {provider!r} (one of {', '.join(PROVIDERS)})"
        )
    common: dict[str, Any] = {}
    options: dict[str, str] = {}
    for key, value in data.items():
        if key in _COMMON:
            try:
                common[key] = _COMMON[key](value)
            except (TypeError, ValueError):
                kind = _COMMON[key].__name__
                raise PoolSpecError(
                    f"pool {name!r}: {key}={value!r} is not a{'n' if kind == 'int' else ''} {kind}"
                ) from None
        elif key in _PROVIDER_KEYS[provider]:
            options[key] = value if isinstance(value, str) else json.dumps(value)
        else:
            known = ", ".join(sorted({*_COMMON, *_PROVIDER_KEYS[provider]}))
            raise PoolSpecError(f"pool {name!r}: unknown key {key!r} for {provider} ({known})")
    spec = PoolSpec(name=name, provider=provider, options=options, **common)
    _check(spec)
    return spec


def _parse_flag(text: str) -> dict[str, Any]:
    name, sep, rest = text.partition("=")
    provider, _, pairs = rest.partition(":")
    if not sep or not provider:
        raise PoolSpecError(
            f"pool spec {text!r}: expected NAME=PROVIDER[:key=value,...], "
            "e.g. gpu=local:min=0,max=2"
        )
    data: dict[str, Any] = {"name": name, "provider": provider.strip()}
    for pair in filter(None, (p.strip() for p in pairs.split(","))):
        key, eq, value = pair.partition("=")
        if not eq:
            raise PoolSpecError(f"pool {name!r}: {pair!r} is not key=value")
        data[key.strip()] = value.strip()
    return data


def _check(spec: PoolSpec) -> None:
    where = f"pool {spec.name!r}"
    if spec.min < 0 or spec.max < 1 or spec.min > spec.max:
        raise PoolSpecError(
            f"{where}: need 0 <= min <= max and max >= 1 (min={spec.min}, max={spec.max})"
        )
    if spec.target <= 0:
        raise PoolSpecError(f"{where}: target must be > 0")
    if spec.cooldown < 0 or spec.start_timeout <= 0 or spec.health_interval <= 0:
        raise PoolSpecError(f"{where}: cooldown, start_timeout and health_interval must be > 0")
    if spec.starts_per_minute < 1:
        raise PoolSpecError(f"{where}: starts_per_minute must be >= 1")


def split_pools(value: str | list[Any]) -> list[Any]:
    """``COMFYFLEET_POOLS`` as written: a JSON list, one JSON object, or flag-style entries
    separated by ``;`` or newlines (a comma already separates a pool's keys)."""
    if not isinstance(value, str):
        return list(value)
    text = value.strip()
    if text.startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PoolSpecError(f"COMFYFLEET_POOLS is not a valid JSON list: {exc}") from None
        return list(entries)
    if text.startswith("{"):
        return [text]
    return [part.strip() for part in text.replace("\n", ";").split(";") if part.strip()]


def parse_pools(entries: str | list[Any]) -> list[PoolSpec]:
    """Every configured pool; names must be unique."""
    specs = [parse_pool(entry) for entry in split_pools(entries)]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise PoolSpecError(f"two pools are named {spec.name!r}")
        seen.add(spec.name)
    return specs


def validate_pools(settings: Any) -> list[PoolSpec]:
    """Parse ``settings.pools`` and run every provider's checks (options, then what can be
    asked before starting: the Docker daemon and image); PoolSpecError (one line) for the
    first problem. ``comfyfleet serve`` calls it before starting anything."""
    from comfyfleet.fleet.pools.provider import make_provider

    specs = parse_pools(settings.pools)
    for spec in specs:
        provider = make_provider(spec, data_dir=settings.data_dir, settings=settings)
        provider.validate()
        provider.preflight()
    return specs
