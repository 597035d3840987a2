"""Getting one model file onto disk, safely, once.

Plain http(s) downloads stream into ``<file>.part`` and resume with ``Range`` after a dropped
connection; the bytes are hashed as they arrive and the file is renamed into place only when
size and sha256 match (a mismatch deletes the partial file). Hugging Face files go through
``huggingface_hub.hf_hub_download``. A file lock next to the target makes workers that share a
volume download each file once; the others wait and then find it present.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from filelock import FileLock, Timeout

from comfyfleet.errors import ChecksumMismatch, ModelDownloadError
from comfyfleet.models.reach import connect_failure

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) as a download advances."""

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def lock_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


@contextlib.asynccontextmanager
async def file_lock(
    dest: Path, *, poll: float = 0.05, max_poll: float = 1.0
) -> AsyncIterator[None]:
    """Hold an exclusive lock for ``dest`` across processes and coroutines.

    Polls with non-blocking attempts so waiting never ties up a thread and stays cancellable.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path(dest), thread_local=False, blocking=False)
    while True:
        try:
            lock.acquire()
            break
        except Timeout:
            await asyncio.sleep(poll)
            poll = min(poll * 2, max_poll)
    try:
        yield
    finally:
        lock.release()


def sha256_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    """Hash a file (or its first ``upto`` bytes) in chunks."""
    h = hashlib.sha256()
    remaining = upto
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            n = CHUNK if remaining is None else min(CHUNK, remaining)
            chunk = f.read(n)
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return h


def replace_with_symlink(dest: Path, target: Path) -> None:
    """Point ``dest`` at ``target`` atomically (a temp link renamed over it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.link-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, dest)


def verify(path: Path, *, sha256: str | None, size: int | None, source: str) -> None:
    """Raise ChecksumMismatch (after deleting ``path``) unless size and sha256 match."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink()
        raise ChecksumMismatch(
            f"{source}: expected {size} bytes, got {actual_size}; file deleted",
            source=source,
            expected_size=size,
            actual_size=actual_size,
        )
    if sha256 is not None:
        actual = sha256_file(path).hexdigest()
        if actual != sha256:
            path.unlink()
            raise ChecksumMismatch(
                f"{source}: sha256 mismatch (expected {sha256}, got {actual}); file deleted",
                source=source,
                expected_sha256=sha256,
                actual_sha256=actual,
            )


class _Transfer:
    """One URL into one ``.part`` file, over as many requests as it takes."""

    def __init__(self, url: str, part: Path, headers: dict[str, str], progress: Progress | None):
        self.url = url
        self.part = part
        self.headers = headers
        self.progress = progress
        self.hasher = hashlib.sha256()
        self.hashed = 0  # bytes of ``part`` that ``hasher`` covers
        self.total: int | None = None

    def _sync_hasher(self) -> int:
        offset = self.part.stat().st_size if self.part.exists() else 0
        if offset != self.hashed:
            self.hasher = sha256_file(self.part, offset) if offset else hashlib.sha256()
            self.hashed = offset
        return offset

    def _restart(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()
        self.hasher, self.hashed = hashlib.sha256(), 0

    async def attempt(self, session: aiohttp.ClientSession) -> bool:
        """Fetch what is missing; True when the part file is complete."""
        offset = await asyncio.to_thread(self._sync_hasher)
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with session.get(self.url, headers=headers) as resp:
            if resp.status == 416 and offset:
                total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                if total.isdigit() and int(total) == offset:
                    self.total = offset
                    return True
                self._restart()
                return False
            if resp.status >= 400:
                raise ModelDownloadError(
                    f"{self.url}: HTTP {resp.status} {resp.reason}", url=self.url, http=resp.status
                )
            if resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    self._restart()  # not the range we asked for: start clean
                    return False
                self.total = int(m.group(3)) if m.group(3).isdigit() else None
            else:
                if offset:
                    log.info("%s ignored Range; starting over", self.url)
                    self._restart()
                    offset = 0
                self.total = resp.content_length
            with open(self.part, "ab" if offset else "wb") as f:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    f.write(chunk)
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)
                    if self.progress:
                        self.progress(self.hashed, self.total)
                f.flush()
                os.fsync(f.fileno())
        return self.total is None or self.hashed == self.total


async def download_url(
    url: str,
    dest: Path,
    *,
    session: aiohttp.ClientSession,
    sha256: str | None = None,
    size: int | None = None,
    headers: dict[str, str] | None = None,
    attempts: int = 5,
    progress: Progress | None = None,
) -> int:
    """Download ``url`` to ``dest`` (caller holds the lock); return the number of bytes.

    A dropped connection is retried from where it stopped; after ``attempts`` the ``.part``
    file is kept so the next call resumes. 4xx answers are not retried, nor is a first
    connection that cannot be made at all (offline, DNS, refused: ``reason="unreachable"``).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    transfer = _Transfer(url, part, headers or {}, progress)
    last: Exception | None = None
    for n in range(attempts):
        try:
            if await transfer.attempt(session):
                break
        except ModelDownloadError as e:
            if 400 <= e.details.get("http", 500) < 500:
                raise
            last = e
        except (TimeoutError, aiohttp.ClientError) as e:
            why = connect_failure(e) if n == 0 else None
            if why is not None:
                raise ModelDownloadError(f"{url}: {why}", url=url, reason="unreachable") from e
            last = e
        log.warning("download of %s interrupted (attempt %d/%d): %s", url, n + 1, attempts, last)
    else:
        raise ModelDownloadError(
            f"{url}: download failed after {attempts} attempts: {last!r} "
            f"({transfer.hashed} bytes kept in {part.name} for resume)",
            url=url,
        )
    got = transfer.hashed
    if size is not None and got != size:
        part.unlink()
        raise ChecksumMismatch(
            f"{url}: expected {size} bytes, got {got}; partial file deleted",
            source=url,
            expected_size=size,
            actual_size=got,
        )
    actual = transfer.hasher.hexdigest()
    if sha256 is not None and actual != sha256:
        part.unlink()
        raise ChecksumMismatch(
            f"{url}: sha256 mismatch (expected {sha256}, got {actual}); partial file deleted",
            source=url,
            expected_sha256=sha256,
            actual_sha256=actual,
        )
    os.replace(part, dest)
    return got


def _tqdm_class(progress: Progress) -> Any:
    """A silent tqdm that forwards huggingface_hub's byte counts to ``progress``."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            progress(self._done, self.total)
            return None

    return _Forward


def download_hf(
    repo: str,
    file: str,
    dest: Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Fetch a Hugging Face file with ``hf_hub_download`` into a staging dir next to ``dest``.

    Blocking (run it in a thread); the caller holds the lock. Staging on the same file system
    keeps the final rename atomic; huggingface_hub resumes its own ``.incomplete`` files.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    source = f"hf://{repo}/{file}"
    staging = dest.parent / ".comfyfleet-hf"
    try:
        got = hf_hub_download(
            repo,
            file,
            revision=revision,
            token=token,
            local_dir=staging,
            endpoint=endpoint,
            tqdm_class=_tqdm_class(progress) if progress else None,
        )
    except (HfHubHTTPError, EntryNotFoundError, OSError, ValueError) as e:
        raise _hub_error(source, e) from e
    path = Path(str(got))
    verify(path, sha256=sha256, size=size, source=source)
    os.replace(path, dest)
    return dest.stat().st_size


def _hub_error(source: str, error: Exception) -> ModelDownloadError:
    """One line for what huggingface_hub raised (its messages run over many lines). A failed
    look-up comes wrapped in LocalEntryNotFoundError ("not in the local cache"); the reason
    is its cause."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) else error
    status = None
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
    if isinstance(cause, RepositoryNotFoundError) or status in (401, 403):  # gated, private
        why = "no such repository, or it is private or gated: set HF_TOKEN to a token with access"
    elif isinstance(cause, RevisionNotFoundError):
        why = "no such revision: check 'revision'"
    elif isinstance(cause, EntryNotFoundError) or status == 404:
        why = "no such file in the repository: check 'file' and 'revision'"
    elif status is not None:
        why = f"the Hub answered HTTP {status}"
    elif isinstance(error, LocalEntryNotFoundError):  # no answer at all
        return ModelDownloadError(
            f"{source}: the Hub could not be reached", source=source, reason="unreachable"
        )
    else:
        text = str(error).strip()
        why = text.splitlines()[0] if text else type(error).__name__
    return ModelDownloadError(f"{source}: {why}", source=source, http=status)
