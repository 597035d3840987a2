"""The local sink: artifacts are written into a directory (the CLI's ``--out``, a volume).

Names come from ComfyUI, so only their last component is used, sanitised; an existing file is
never overwritten — the new one gets `` (1)``, `` (2)``... (created exclusively, so concurrent
jobs cannot collide either).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from comfyfleet.errors import StorageError
from comfyfleet.inputs import safe_filename
from comfyfleet.jobs import Artifact


class LocalSink:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    async def store(self, artifact: Artifact, chunks: AsyncIterator[bytes]) -> Artifact:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path, handle = self._create(safe_filename(artifact.filename, "artifact"))
        except OSError as exc:
            raise StorageError(f"cannot write into {self.directory}: {exc}") from exc
        size = 0
        try:
            with handle:
                async for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            if isinstance(exc, OSError):
                raise StorageError(f"writing {path} failed: {exc}") from exc
            raise
        return artifact.model_copy(update={"path": str(path), "size": size})

    def _create(self, name: str) -> tuple[Path, BinaryIO]:
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        for n in range(10_000):
            candidate = name if n == 0 else f"{stem} ({n}){dot}{ext}"
            path = self.directory / candidate
            try:
                return path, path.open("xb")
            except FileExistsError:
                continue
        raise StorageError(f"too many files named {name} in {self.directory}")
