"""A job's files on ComfyUI's side: its inputs going in, its outputs coming out, then gone.

Every job gets names of its own — inputs as ``<job>_<i>_<name>`` in ComfyUI's input folder
(no per-job subfolder: a unique name is enough, and each folder costs ComfyUI a mkdir and us an
rmdir), outputs under ``<job>/`` (the workflow's filename prefixes point there) — so concurrent
jobs never read each other's files, and cleanup knows exactly what to remove.

When ComfyUI's folders are known (same machine: the worker, a local agent), inputs are written
straight into the input folder and fsynced (seed 002's RAM-disk race), outputs are read straight
from the output folder, and both are deleted afterwards — ComfyUI has no delete API, and it
rescans both folders on every LoadImage/SaveImage, so leftovers slow every later job down.
Otherwise inputs are uploaded and outputs streamed from ``/view``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.comfy import Client, HistoryEntry
from comfyfleet.errors import ComfyError
from comfyfleet.inputs import DecodedImage
from comfyfleet.jobs import Artifact
from comfyfleet.outputs.collect import collect

log = logging.getLogger(__name__)

CHUNK = 2**18


@dataclass
class JobFiles:
    key: str
    input_dir: Path | None = None
    output_dir: Path | None = None
    zero_fill: bool = False
    _inputs: list[Path] = field(default_factory=list)
    _outputs: list[Path] = field(default_factory=list)

    @property
    def local(self) -> bool:
        return self.input_dir is not None or self.output_dir is not None

    def input_name(self, index: int, image: DecodedImage) -> str:
        """The LoadImage value of input ``index``: ``<job>_<i>_<name>``."""
        return f"{self.key}_{index}_{image.name}"

    async def stage(self, client: Client, images: list[DecodedImage]) -> None:
        """Put the inputs where ComfyUI reads them (written and fsynced, or uploaded)."""
        if not images:
            return
        names = [self.input_name(i, img) for i, img in enumerate(images)]
        if self.input_dir is not None:
            self._inputs = [self.input_dir / name for name in names]
            await asyncio.to_thread(self._write, images)
            return
        stored = await asyncio.gather(
            *(client.upload(name, img.data) for name, img in zip(names, images, strict=True))
        )
        for name, answer in zip(names, stored, strict=True):
            if (answer or {}).get("name") != name:
                raise ComfyError(f"ComfyUI stored input {name} as {answer!r}")

    def _write(self, images: list[DecodedImage]) -> None:
        for path, img in zip(self._inputs, images, strict=True):
            with path.open("wb") as f:
                f.write(img.data)
                f.flush()
                os.fsync(f.fileno())

    def remember(self, entry: HistoryEntry) -> None:
        """Note every file the prompt saved (temp previews too) for `remove`."""
        roots = {"input": self.input_dir, "output": self.output_dir}
        for artifact in collect(entry, include_temp=True):
            root = roots.get(artifact.type)
            path = inside(root, artifact.subfolder, artifact.filename) if root else None
            if path is not None:
                self._outputs.append(path)

    def output_path(self, artifact: Artifact) -> Path | None:
        """Where an output is on this host (its output folder is known), else None."""
        if self.output_dir is None or artifact.type != "output":
            return None
        return inside(self.output_dir, artifact.subfolder, artifact.filename)

    def chunks(self, client: Client, artifact: Artifact) -> AsyncIterator[bytes]:
        """An output's bytes: from the output folder when it is here, else from ``/view``."""
        if self.output_dir is not None and artifact.type == "output":
            path = inside(self.output_dir, artifact.subfolder, artifact.filename)
            if path is not None:
                return _read(path, client, artifact)
        return client.view(artifact.filename, artifact.subfolder, artifact.type)

    def remove(self) -> None:
        """Delete the job's files and folders (zero-filled first if asked); never raises."""
        for path in (*self._inputs, *self._outputs):
            self._delete(path)
        folder = inside(self.output_dir, self.key) if self.output_dir is not None else None
        if folder is not None:
            self._delete(folder)

    def _delete(self, path: Path) -> None:
        try:
            if self.zero_fill:
                for file in path.rglob("*") if path.is_dir() else [path]:
                    if file.is_file() and not file.is_symlink():
                        _zero(file)
            try:
                path.unlink()
            except IsADirectoryError:
                shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)


def inside(root: Path, *parts: str) -> Path | None:
    """``root/parts`` if it stays inside ``root`` (names come from ComfyUI and requests).

    A lexical check — no filesystem calls, so it is cheap on every job.
    """
    relative = os.path.normpath(os.path.join(*parts)) if parts else "."
    if relative in (".", "") or relative.startswith("..") or os.path.isabs(relative):
        return None
    return root / relative


async def _read(path: Path, client: Client, artifact: Artifact) -> AsyncIterator[bytes]:
    try:
        f = path.open("rb")
    except FileNotFoundError:  # the folder given is not ComfyUI's after all
        async for chunk in client.view(artifact.filename, artifact.subfolder, artifact.type):
            yield chunk
        return
    with f:
        while chunk := f.read(CHUNK):
            yield chunk


def _zero(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        for start in range(0, size, 2**20):
            f.write(bytes(min(2**20, size - start)))
        f.flush()
        os.fsync(f.fileno())
