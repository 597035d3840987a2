"""Models a job asks for by URL: fetched before its prompt runs, kept in a bounded LRU cache.

    cache = ModelCache(root, max_bytes=settings.model_cache_bytes)
    async with ensure_models(spec.models, cache) as paths:
        ...  # run the prompt; these files cannot be evicted meanwhile

Only files this cache downloaded are ever evicted; files that were already there (a manifest,
the host cache, a person) are used but never touched. The LRU index is a small JSON file in the
root, shared by every worker on the volume. A file in use holds a shared ``flock``, so a worker
evicting for space skips files other workers are using, and in-process refcounts do the same
for this worker. Concurrent requests for one file share one download (in-process single-flight,
and the per-file lock across processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from pydantic import BaseModel, ValidationError

from comfyfleet.errors import ForbiddenURL, ManifestError, ModelDownloadError, ResourceExhausted
from comfyfleet.models import download as dl
from comfyfleet.models.manifest import ModelEntry
from comfyfleet.models.sync import Sources, new_session, provide, target_path
from comfyfleet.models.volumes import ModelRoot
from comfyfleet.urls import is_forbidden_address

log = logging.getLogger(__name__)

INDEX_DIR = ".comfyfleet"


def to_entries(requests: Iterable[Any]) -> list[ModelEntry]:
    """Job model requests (``ModelFile``, dicts, entries) as validated entries (400 if bad)."""
    out = []
    for i, req in enumerate(requests):
        data = req.model_dump(exclude_none=True) if isinstance(req, BaseModel) else req
        try:
            out.append(ModelEntry.model_validate(data))
        except ValidationError as e:
            first = e.errors()[0]
            fld = ".".join(str(p) for p in first["loc"]) or None
            msg = first["msg"].removeprefix("Value error, ")
            raise ManifestError(
                f"models[{i}]" + (f".{fld}" if fld else "") + f": {msg}",
                source="job",
                index=i,
                field=fld,
            ) from e
    return out


async def check_public_url(url: str) -> None:
    """Refuse URLs whose host resolves to a private, loopback or link-local address (the URL
    policy of `comfyfleet.urls`, also for IPv6 addresses wrapping one)."""
    host = urlparse(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ForbiddenURL(f"cannot resolve host of {url}: {e}", url=url) from e
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if is_forbidden_address(ip):
            raise ForbiddenURL(f"{url} resolves to a non-public address {ip}", url=url)


class _Index:
    """The shared LRU index: relative path -> {size, tick}; read-modify-write under a lock."""

    def __init__(self, root: Path) -> None:
        self.path = root / INDEX_DIR / "ondemand.json"

    @contextlib.asynccontextmanager
    async def edit(self) -> AsyncIterator[dict[str, Any]]:
        async with dl.file_lock(self.path):
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {"tick": 0, "files": {}}
            yield data
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"tick": 0, "files": {}}


def _in_use_elsewhere(path: Path) -> bool:
    """True when some process holds a lease (shared flock) on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe lock
    return False


class ModelCache:
    """Size-bounded LRU cache of on-demand model files in one model root."""

    def __init__(
        self,
        root: ModelRoot,
        *,
        max_bytes: int,
        sources: Sources | None = None,
        session: aiohttp.ClientSession | None = None,
        allow_private_urls: bool = False,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.sources = sources or Sources()
        self.allow_private_urls = allow_private_urls
        self._session = session
        self._index = _Index(root.path)
        self._inflight: dict[Path, asyncio.Future[Path]] = {}
        self._refs: Counter[Path] = Counter()
        self._fds: dict[Path, list[int]] = {}

    def _key(self, path: Path) -> str:
        return os.path.relpath(path, self.root.path)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- fetching ---------------------------------------------------------------------

    async def fetch(self, entry: ModelEntry) -> Path:
        """The file for ``entry``, downloaded at most once however many callers ask."""
        dest = target_path(entry, self.root)
        fut = self._inflight.get(dest)
        if fut is None:
            fut = asyncio.ensure_future(self._fetch(entry, dest))
            self._inflight[dest] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(dest, None))
        return await asyncio.shield(fut)

    async def _fetch(self, entry: ModelEntry, dest: Path) -> Path:
        if not self.allow_private_urls and entry.url:
            await check_public_url(entry.url)
        if entry.size is not None and not dest.exists():
            if entry.size > self.max_bytes:
                raise ResourceExhausted(
                    f"{entry.source} is {entry.size} bytes, more than the model cache's "
                    f"{self.max_bytes}",
                    resource="model_cache",
                )
            await self.evict(entry.size, keep={dest})
        if self._session is None:
            self._session = new_session()
        how = await provide(entry, dest, session=self._session, sources=self.sources)
        async with self._index.edit() as data:
            key = self._key(dest)
            if how == "downloaded":
                data["files"][key] = {"size": dest.stat().st_size}
            if key in data["files"]:
                data["tick"] += 1
                data["files"][key]["tick"] = data["tick"]
        if how == "downloaded":
            await self.evict(0, keep={dest})
        return dest

    # --- leases -----------------------------------------------------------------------

    def lease(self, path: Path) -> None:
        """Mark ``path`` in use (this process and, via a shared flock, every other)."""
        self._refs[path] += 1
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._fds.setdefault(path, []).append(fd)

    def release(self, path: Path) -> None:
        self._refs[path] -= 1
        if self._refs[path] <= 0:
            del self._refs[path]
        fds = self._fds.get(path)
        if fds:
            os.close(fds.pop())
            if not fds:
                del self._fds[path]

    def in_use(self, path: Path) -> bool:
        return self._refs[path] > 0 or _in_use_elsewhere(path)

    # --- eviction ---------------------------------------------------------------------

    def cached_bytes(self) -> int:
        return sum(f.get("size", 0) for f in self._index.read()["files"].values())

    async def evict(self, incoming: int, *, keep: Iterable[Path] = ()) -> list[Path]:
        """Delete least-recently-used cached files until ``incoming`` more bytes fit.

        Raises ResourceExhausted when files in use leave no room for a new download.
        """
        removed: list[Path] = []
        keep = set(keep)
        async with self._index.edit() as data:
            files: dict[str, dict[str, int]] = data["files"]
            for key in [k for k in files if not (self.root.path / k).exists()]:
                del files[key]
            total = sum(f["size"] for f in files.values())
            for key in sorted(files, key=lambda k: files[k].get("tick", 0)):
                if total + incoming <= self.max_bytes:
                    break
                path = self.root.path / key
                if path in keep or self.in_use(path):
                    continue
                path.unlink(missing_ok=True)
                total -= files.pop(key)["size"]
                removed.append(path)
                log.info("evicted %s from the model cache", path)
        if incoming and total + incoming > self.max_bytes:
            raise ResourceExhausted(
                f"model cache full: {total} bytes in use, {incoming} more needed, "
                f"limit {self.max_bytes}",
                resource="model_cache",
            )
        return removed


@contextlib.asynccontextmanager
async def ensure_models(requests: Sequence[Any], cache: ModelCache) -> AsyncIterator[list[Path]]:
    """Fetch a job's model files into their folders and keep them from eviction while the
    block runs; yields their paths in request order.

    Each file is leased the moment it is ready, so fetching the job's next file cannot evict
    it; a file another worker evicted between fetch and lease is fetched again.
    """
    entries = to_entries(requests)
    leased: list[Path] = []

    async def one(entry: ModelEntry) -> Path:
        for _ in range(3):
            path = await cache.fetch(entry)
            cache.lease(path)
            leased.append(path)
            if path.exists():
                return path
            cache.release(path)
            leased.remove(path)
        raise ModelDownloadError(f"{entry.source} kept being evicted", source=entry.source)

    try:
        paths = list(await asyncio.gather(*(one(e) for e in entries)))
        yield paths
    finally:
        for path in leased:
            cache.release(path)
