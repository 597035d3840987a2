"""Make the models a manifest names present, and say which are present, missing or corrupt.

For each entry, in order of preference: already there (size checked; sha256 too with
``verify``) -> linked from the host cache (Hugging Face layout, zero extra disk) -> downloaded.
Everything after the first check happens under the file's lock, and the check is repeated
once the lock is held, so a file another worker just fetched is not fetched again. A source
that cannot be reached at all (offline, DNS, refused; ``HF_HUB_OFFLINE=1`` for the Hub) fails
at once with one line saying what to do, instead of after the libraries' retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp

from comfyfleet.errors import ComfyFleetError, ModelDownloadError
from comfyfleet.models import download as dl
from comfyfleet.models.hfcache import blob_sha256, find_cached, parse_hf_url
from comfyfleet.models.manifest import ModelEntry
from comfyfleet.models.reach import CONNECT_TIMEOUT, unreachable
from comfyfleet.models.volumes import ModelRoot

log = logging.getLogger(__name__)

State = Literal["present", "missing", "corrupt"]
How = Literal["present", "linked", "downloaded"]


@dataclass
class Sources:
    """Where files may come from besides the network."""

    hf_cache_dir: Path | None = None
    hf_token: str | None = None
    hf_endpoint: str | None = None  # None: huggingface_hub's default (HF_ENDPOINT)


@dataclass
class Status:
    entry: ModelEntry
    state: State
    path: Path
    detail: str = ""


@dataclass
class Outcome:
    entry: ModelEntry
    path: Path
    how: How | None = None
    error: ComfyFleetError | None = None


def target_path(entry: ModelEntry, root: ModelRoot) -> Path:
    """Where ``entry`` lives in ``root``."""
    return root.folder_path(entry.folder) / entry.name


def check_file(path: Path, entry: ModelEntry, *, verify: bool = False) -> tuple[State, str]:
    """Classify one file on disk against its entry (hashes only when ``verify``)."""
    if not path.exists():
        return "missing", "broken link" if path.is_symlink() else ""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return "corrupt", f"size {size}, expected {entry.size}"
    if entry.sha256:
        known = blob_sha256(path) if path.is_symlink() else None
        if known is None and verify:
            known = dl.sha256_file(path).hexdigest()
        if known is not None and known != entry.sha256:
            return "corrupt", f"sha256 {known}, expected {entry.sha256}"
    return "present", ""


def status(
    entries: Sequence[ModelEntry], roots: Sequence[ModelRoot], *, verify: bool = False
) -> list[Status]:
    """Each entry's state; a file in any root counts, the primary root is where it would go."""
    out = []
    for entry in entries:
        found: Status | None = None
        for root in roots:
            path = target_path(entry, root)
            state, detail = check_file(path, entry, verify=verify)
            if state != "missing" or detail:
                found = Status(entry, state, path, detail)
                if state == "present":
                    break
        out.append(found or Status(entry, "missing", target_path(entry, roots[0])))
    return out


def _cached(entry: ModelEntry, sources: Sources) -> Path | None:
    if entry.repo:
        ref = (entry.repo, entry.file or "", entry.revision)
    else:
        hf = parse_hf_url(entry.url or "")
        if hf is None:
            return None
        ref = (hf[0], hf[2], hf[1])
    cached = find_cached(sources.hf_cache_dir, ref[0], ref[1], ref[2])
    if cached is not None and entry.sha256:
        known = blob_sha256(cached)
        if known is not None and known != entry.sha256:
            log.warning("host cache has %s with sha256 %s, not %s", cached, known, entry.sha256)
            return None
    return cached


_HUB_HINT = (
    "check the network (or HF_ENDPOINT), or pre-seed the host cache (COMFYFLEET_HF_CACHE_DIR)"
)


def _from_hub(entry: ModelEntry) -> bool:
    return entry.repo is not None or parse_hf_url(entry.url or "") is not None


def _hub_offline() -> bool:
    from huggingface_hub.constants import is_offline_mode

    return is_offline_mode()


async def _check_hub(entry: ModelEntry, sources: Sources) -> None:
    """Fail now, in one line, if the Hub is off limits (HF_HUB_OFFLINE) or out of reach."""
    if _hub_offline():
        raise ModelDownloadError(
            f"{entry.source}: not in the host cache, and HF_HUB_OFFLINE=1 forbids downloading; "
            "pre-seed the host cache (COMFYFLEET_HF_CACHE_DIR) or unset HF_HUB_OFFLINE",
            source=entry.source,
            reason="offline",
        )
    if entry.repo is not None:  # URLs fail fast by themselves (download_url)
        from huggingface_hub.constants import ENDPOINT

        why = await unreachable(sources.hf_endpoint or ENDPOINT)
        if why is not None:
            raise ModelDownloadError(
                f"{entry.source}: {why}; {_HUB_HINT}", source=entry.source, reason="unreachable"
            )


async def provide(
    entry: ModelEntry,
    dest: Path,
    *,
    session: aiohttp.ClientSession,
    sources: Sources,
    verify: bool = False,
    progress: dl.Progress | None = None,
) -> How:
    """Make ``dest`` hold ``entry``'s file; raises a ModelError subclass on failure."""
    if check_file(dest, entry, verify=verify)[0] == "present":
        return "present"
    async with dl.file_lock(dest):
        state, _ = check_file(dest, entry, verify=verify)
        if state == "present":
            return "present"
        if dest.is_symlink() or state == "corrupt":
            dest.unlink()
        cached = _cached(entry, sources)
        if cached is not None:
            dl.replace_with_symlink(dest, cached)
            return "linked"
        if _from_hub(entry):
            await _check_hub(entry, sources)
        try:
            await _download(entry, dest, session=session, sources=sources, progress=progress)
        except ModelDownloadError as e:
            if e.details.get("reason") != "unreachable":
                raise
            hint = (
                _HUB_HINT
                if _from_hub(entry)
                else f"check the network and the URL, or put the file at {dest}"
            )
            raise ModelDownloadError(f"{e.message}; {hint}", **e.details) from e
        return "downloaded"


async def _download(
    entry: ModelEntry,
    dest: Path,
    *,
    session: aiohttp.ClientSession,
    sources: Sources,
    progress: dl.Progress | None,
) -> None:
    if entry.repo:
        await asyncio.to_thread(
            dl.download_hf,
            entry.repo,
            entry.file or "",
            dest,
            revision=entry.revision,
            token=sources.hf_token,
            endpoint=sources.hf_endpoint,
            sha256=entry.sha256,
            size=entry.size,
            progress=progress,
        )
        return
    headers = {}
    if sources.hf_token and parse_hf_url(entry.url or ""):
        headers["Authorization"] = f"Bearer {sources.hf_token}"
    await dl.download_url(
        entry.url or "",
        dest,
        session=session,
        sha256=entry.sha256,
        size=entry.size,
        headers=headers,
        progress=progress,
    )


def new_session() -> aiohttp.ClientSession:
    """A session for large downloads: no total timeout, but stalled reads fail, and so does a
    connection that does not open within seconds (an unreachable host is not waited for)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=120)
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False)


async def sync(
    entries: Sequence[ModelEntry],
    root: ModelRoot,
    *,
    sources: Sources,
    session: aiohttp.ClientSession | None = None,
    verify: bool = False,
    concurrency: int = 4,
    progress: Callable[[ModelEntry], dl.Progress | None] | None = None,
) -> list[Outcome]:
    """Provide every entry into ``root``; failures are collected (and logged at debug level:
    the caller reports them), not raised."""
    gate = asyncio.Semaphore(concurrency)
    own = session is None
    session = session or new_session()

    async def one(entry: ModelEntry) -> Outcome:
        dest = target_path(entry, root)
        async with gate:
            try:
                how = await provide(
                    entry,
                    dest,
                    session=session,
                    sources=sources,
                    verify=verify,
                    progress=progress(entry) if progress else None,
                )
                return Outcome(entry, dest, how)
            except ComfyFleetError as e:
                log.debug("%s", e.message)
                return Outcome(entry, dest, error=e)

    try:
        return list(await asyncio.gather(*(one(e) for e in entries)))
    finally:
        if own:
            await session.close()
