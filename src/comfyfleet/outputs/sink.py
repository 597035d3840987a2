"""Where artifact bytes go. A sink receives an artifact's metadata and its bytes as a stream and
returns the artifact with ``data``/``url``/``path`` and ``size`` filled in; it never needs the
whole file in memory unless it returns it inline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from comfyfleet.jobs import Artifact


class Sink(Protocol):
    async def store(self, artifact: Artifact, chunks: AsyncIterator[bytes]) -> Artifact:
        """Consume ``chunks`` (the artifact's bytes) and return where they went."""
        ...


# A sink may also offer ``async def move(artifact, path) -> Artifact | None``: take the file
# at ``path`` (on this host, ComfyUI's output) by moving it instead of reading its bytes;
# None when it cannot (the file is not there), and the bytes are streamed to `store` instead.
