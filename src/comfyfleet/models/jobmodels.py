"""The model files a job asks for (``JobSpec.models``), in place before its prompt runs.

Used wherever a job's prompt runs next to a ComfyUI whose disk we share: the RunPod worker, the
gateway's local agents and ``comfyfleet agent``. Their settings name the model root; a job asking
for files where none is known fails at once, naming the settings to set.

One `ModelCache` per event loop (its download session and single-flight futures belong to one
loop), so jobs running together share downloads. Its root is ``model_cache_root``, else the
first model root found (configured, then on a network volume), else ``COMFYUI_DIR/models``.

ComfyUI lists model files in its node catalogue (``object_info``), which the client caches; a job
naming a file that just arrived would fail our own validation against the stale copy. So after a
job's files are in place the catalogue is fetched again when one of them is newer than the last
fetch — a job whose files were all there before costs nothing extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from comfyfleet.config import Settings
from comfyfleet.errors import ModelError
from comfyfleet.jobs import JobSpec
from comfyfleet.models.ondemand import ModelCache, ensure_models, to_entries
from comfyfleet.models.sync import Sources, target_path
from comfyfleet.models.volumes import ModelRoot, detect_roots

if TYPE_CHECKING:
    from comfyfleet.comfy.client import Client

log = logging.getLogger(__name__)


def model_root(settings: Settings) -> ModelRoot | None:
    """Where a job's model files go (see the module docstring); None when nowhere is known."""
    if settings.model_cache_root is not None:
        return ModelRoot(settings.model_cache_root, "comfyui", source="configured")
    primary = detect_roots(settings.model_roots, bases=settings.volume_bases).primary
    if primary is not None:
        return primary
    if settings.comfy_dir is not None:
        return ModelRoot(settings.comfy_dir / "models", "comfyui", source="comfy_dir")
    return None


class JobModels:
    """On-demand model cache of one process (``who`` runs the jobs, for error messages) and its
    object_info bookkeeping."""

    def __init__(self, settings: Settings, *, who: str = "worker") -> None:
        self.settings = settings
        self.who = who
        self._root: ModelRoot | None = None
        self._caches: dict[int, ModelCache] = {}
        # client -> time.time() just before its object_info was last fetched by us
        self._fetched_at: weakref.WeakKeyDictionary[Client, float] = weakref.WeakKeyDictionary()

    def root(self) -> ModelRoot:
        if self._root is None:
            self._root = model_root(self.settings)
        if self._root is None:
            raise ModelError(
                f"this job asks for model files but the {self.who} has no model root: set "
                "COMFYFLEET_MODEL_CACHE_ROOT, COMFYUI_DIR or COMFYFLEET_MODEL_ROOTS"
            )
        return self._root

    def _cache(self) -> ModelCache:
        key = id(asyncio.get_running_loop())
        cache = self._caches.get(key)
        if cache is None:
            s = self.settings
            cache = self._caches[key] = ModelCache(
                self.root(),
                max_bytes=s.model_cache_bytes,
                sources=Sources(hf_cache_dir=s.hf_cache_dir, hf_token=s.hf_token),
                allow_private_urls=s.allow_private_urls,
            )
        return cache

    @contextlib.asynccontextmanager
    async def provide(self, spec: JobSpec) -> AsyncIterator[list[Path]]:
        """Fetch the job's files (shared with concurrent jobs) and keep them from eviction
        while the block runs; yields their paths in request order."""
        if not spec.models:
            yield []
            return
        entries = to_entries(spec.models)  # a bad entry fails here, naming its index and field
        cache = self._cache()
        log.info(
            "fetching models",
            extra={"models": [str(target_path(e, cache.root)) for e in entries]},
        )
        start = time.perf_counter()
        async with ensure_models(entries, cache) as paths:
            log.info(
                "models ready",
                extra={"seconds": round(time.perf_counter() - start, 3), "paths": len(paths)},
            )
            yield paths

    async def refresh_catalogue(self, client: Client, paths: list[Path]) -> None:
        """Fetch object_info again if one of ``paths`` may be missing from ``client``'s copy."""
        if not paths:
            return
        fetched_at = self._fetched_at.get(client)
        if fetched_at is not None and all(_mtime(p) < fetched_at for p in paths):
            return
        now = time.time()
        await client.object_info(refresh=True)
        self._fetched_at[client] = now

    async def close(self) -> None:
        for cache in self._caches.values():
            await cache.close()
        self._caches.clear()


def _mtime(path: Path) -> float:
    """When ``path`` appeared or changed here (a symlink's own time: links are made new)."""
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")
