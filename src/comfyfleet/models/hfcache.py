"""Look files up in a host cache laid out like Hugging Face's hub cache.

RunPod can pre-load models into ``/runpod-volume/huggingface-cache/hub`` with the layout
``models--org--name/{refs/<branch>, snapshots/<commit>/<file>, blobs/<etag>}``. A file found
there is linked, not copied (seed 002: zero extra disk). Only a few ``stat`` calls per lookup.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hub_dir(cache_dir: Path) -> Path:
    """Accept either the cache root or its ``hub`` subdirectory."""
    return cache_dir / "hub" if (cache_dir / "hub").is_dir() else cache_dir


def repo_dir(cache_dir: Path, repo: str) -> Path:
    return hub_dir(cache_dir) / f"models--{repo.replace('/', '--')}"


def find_cached(cache_dir: Path | None, repo: str, file: str, revision: str | None) -> Path | None:
    """The cached snapshot path of ``file``, or None.

    A commit revision names its snapshot; a branch or tag goes through ``refs/``. Without a
    revision, ``refs/main`` is tried, then the newest snapshot that has the file.
    """
    if cache_dir is None:
        return None
    base = repo_dir(cache_dir, repo)
    snapshots = base / "snapshots"
    if not snapshots.is_dir():
        return None
    commits: list[str] = []
    rev = revision or "main"
    if _COMMIT.match(rev):
        commits.append(rev)
    else:
        ref = base / "refs" / rev
        if ref.is_file():
            commits.append(ref.read_text(encoding="utf-8").strip())
    if revision is None and not commits:
        with os.scandir(snapshots) as it:
            dirs = sorted(it, key=lambda e: e.stat().st_mtime, reverse=True)
        commits = [d.name for d in dirs]
    for commit in commits:
        candidate = snapshots / commit / file
        if candidate.is_file():
            return candidate
    return None


def blob_sha256(path: Path) -> str | None:
    """The sha256 the hub cache names an LFS blob by, when the snapshot links to one.

    Lets a cached file be checked against a manifest's sha256 without reading it.
    """
    name = Path(os.path.realpath(path)).name
    return name if _SHA256.match(name) else None


def parse_hf_url(url: str) -> tuple[str, str, str] | None:
    """``(repo, revision, file)`` for ``https://huggingface.co/org/name/resolve/rev/file``."""
    parsed = urlparse(url)
    if parsed.hostname not in ("huggingface.co", "hf.co"):
        return None
    parts = unquote(parsed.path).strip("/").split("/")
    if len(parts) < 5 or parts[2] != "resolve":
        return None
    return f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
