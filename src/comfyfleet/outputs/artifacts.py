"""The gateway's artifact store: where agents put a task's outputs and where clients read them.

By default bytes go to ``<data_dir>/artifacts/<task_id>/<name>`` and are served by the gateway
at the stable URL ``/api/v1/tasks/<task_id>/artifacts/<name>``; with a bucket configured they go
to S3 (``outputs.s3.S3Sink``, keys ``<task_id>/<name>``) and that URL redirects there. Local
agents get a per-task `Sink` from `sink`; remote agents upload through the agents route, which
uses the same sink. A local agent whose ComfyUI's output folder is on this host hands over the
output file itself (`TaskSink.move`): renamed into the store in one step when both are on one
filesystem, else copied by the kernel (``copy_file_range``/``sendfile``), never through Python.
Names are reduced to one safe path segment, so nothing a workflow or an agent names can escape
the task's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import mimetypes
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from comfyfleet.errors import NotFound, StorageError
from comfyfleet.jobs import Artifact

if TYPE_CHECKING:
    from comfyfleet.config import Settings
    from comfyfleet.outputs.s3 import S3Sink

ARTIFACT_ROUTE = "/api/v1/tasks/{task_id}/artifacts/{name}"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

_TYPES = mimetypes.MimeTypes()
for _type, _ext in (
    ("image/webp", ".webp"),
    ("video/webm", ".webm"),
    ("video/mp4", ".mp4"),
    ("audio/flac", ".flac"),
    ("audio/mpeg", ".mp3"),
    ("image/avif", ".avif"),
    ("model/gltf-binary", ".glb"),
):
    _TYPES.add_type(_type, _ext)


def is_safe_segment(value: str) -> bool:
    """One path segment: no separators, no dot files, no ``..``."""
    return bool(_SAFE_SEGMENT.match(value)) and ".." not in value


def safe_name(filename: str) -> str:
    """A file name reduced to safe characters, keeping its extension."""
    base = _UNSAFE_CHARS.sub("_", os.path.basename(filename.replace("\\", "/"))).strip("._")
    base = base.replace("..", "_")
    return base[-150:] or "artifact"


def media_type_for(name: str, fallback: str = "application/octet-stream") -> str:
    guessed, _ = _TYPES.guess_type(name, strict=False)
    return guessed or fallback


def artifact_url(task_id: str, name: str) -> str:
    return ARTIFACT_ROUTE.format(task_id=task_id, name=name)


class ArtifactStore:
    """Stores and finds artifacts by (task id, name)."""

    def __init__(self, root: Path, *, s3: S3Sink | None = None) -> None:
        self.root = root
        self.s3 = s3
        self._device: int | None = None  # the root's filesystem (see `_move_local`)

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        s3 = None
        if settings.bucket_endpoint_url and settings.bucket_name:
            from comfyfleet.outputs.s3 import S3Sink

            s3 = S3Sink.from_settings(settings)
        return cls(Path(settings.data_dir) / "artifacts", s3=s3)

    @property
    def kind(self) -> str:
        return f"s3://{self.s3.bucket}" if self.s3 else str(self.root)

    def sink(self, task_id: str) -> TaskSink:
        """The sink that stores ``task_id``'s outputs (a `comfyfleet.outputs.Sink`)."""
        return TaskSink(self, _check_task_id(task_id))

    def path(self, task_id: str, name: str) -> Path:
        """The local file for an artifact; NotFound for unsafe or unknown names."""
        if not (is_safe_segment(task_id) and is_safe_segment(name)):
            raise NotFound("no such artifact", task_id=task_id, name=name)
        path = self.root / task_id / name
        if not path.is_file():
            raise NotFound("no such artifact", task_id=task_id, name=name)
        return path

    async def s3_url(self, task_id: str, name: str) -> str | None:
        """A fresh URL (presigned when configured) of an artifact stored in S3; None without
        S3. Fresh on each call, so the gateway's artifact URL outlives any presigned one."""
        if self.s3 is None or not (is_safe_segment(task_id) and is_safe_segment(name)):
            return None
        key = self.s3.key_for(Artifact(node_id="", filename=name, subfolder=task_id))
        return await asyncio.to_thread(self.s3.url_for, key)

    async def delete(self, task_id: str) -> None:
        """Remove a task's local artifacts (purge)."""
        folder = self.root / _check_task_id(task_id)
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _store_local(
        self, task_id: str, artifact: Artifact, chunks: AsyncIterator[bytes]
    ) -> Artifact:
        # Every filesystem error is a StorageError (retryable: the task may run again, maybe
        # on a gateway with a working disk), never a bare OSError from the depths.
        folder = self.root / task_id
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            name, handle = await asyncio.to_thread(_create_unique, folder, artifact)
        except OSError as exc:
            raise StorageError(
                f"storing {artifact.filename} failed: {exc}", task_id=task_id, path=str(folder)
            ) from exc
        partial = folder / f".{name}.partial"
        size = 0
        try:
            with handle:
                async for chunk in chunks:
                    size += len(chunk)
                    await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(os.replace, partial, folder / name)
        except BaseException as exc:
            await asyncio.to_thread(_discard, folder, name)
            if isinstance(exc, OSError):
                raise StorageError(
                    f"storing {name} failed: {exc}", task_id=task_id, path=str(folder / name)
                ) from exc
            raise
        return _stored(task_id, artifact, name, size)

    async def _move_local(self, task_id: str, artifact: Artifact, source: Path) -> Artifact | None:
        """Take ``source`` into the task's folder; None if it is not there. On the store's own
        filesystem that is a rename and a few metadata calls, done here (cheaper than the
        thread hop, ~0.3 ms on the way to the answer); a copy across filesystems runs in a
        thread."""
        folder = self.root / task_id
        try:
            if self._same_filesystem(source):
                moved = _move_into(folder, artifact, source)
            else:
                moved = await asyncio.to_thread(_move_into, folder, artifact, source)
        except OSError as exc:
            raise StorageError(
                f"storing {artifact.filename} failed: {exc}", task_id=task_id, path=str(source)
            ) from exc
        if moved is None:
            return None
        name, size = moved
        return _stored(task_id, artifact, name, size)

    def _same_filesystem(self, source: Path) -> bool:
        try:
            if self._device is None:
                self._device = os.stat(self.root).st_dev
            return os.stat(source.parent).st_dev == self._device
        except OSError:
            return False


def _stored(task_id: str, artifact: Artifact, name: str, size: int) -> Artifact:
    return artifact.model_copy(
        update={
            "url": artifact_url(task_id, name),
            "size": size,
            "data": None,
            "path": None,
            "media_type": media_type_for(name, artifact.media_type),
        }
    )


def _move_into(folder: Path, artifact: Artifact, source: Path) -> tuple[str, int] | None:
    """Reserve a name in ``folder``, then rename ``source`` onto it (or copy it
    in the kernel across filesystems). None, leaving nothing behind, if ``source`` is gone."""
    try:
        size = source.stat().st_size
    except FileNotFoundError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    name, handle = _create_unique(folder, artifact)
    handle.close()
    partial, final = folder / f".{name}.partial", folder / name
    try:
        try:
            os.replace(source, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copyfile(source, partial)
            os.replace(partial, final)
    except FileNotFoundError:
        _discard(folder, name)
        return None
    except BaseException:
        _discard(folder, name)
        raise
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)
    return name, size


class TaskSink:
    """A `Sink` bound to one task."""

    def __init__(self, owner: ArtifactStore, task_id: str) -> None:
        self.owner = owner
        self.task_id = task_id

    async def move(self, artifact: Artifact, path: Path) -> Artifact | None:
        """Take the output file at ``path`` (ComfyUI's, on this host) instead of its bytes."""
        if self.owner.s3 is not None:
            return None  # S3 streams it (`store`)
        return await self.owner._move_local(self.task_id, artifact, path)

    async def store(self, artifact: Artifact, chunks: AsyncIterator[bytes]) -> Artifact:
        if self.owner.s3 is None:
            return await self.owner._store_local(self.task_id, artifact, chunks)
        named = artifact.model_copy(update={"filename": safe_name(artifact.filename)})
        stored = await self.owner.s3.store(
            named.model_copy(update={"subfolder": self.task_id}), chunks
        )
        return stored.model_copy(update={"subfolder": artifact.subfolder})


def _check_task_id(task_id: str) -> str:
    if not is_safe_segment(task_id):
        raise StorageError("task id is not a safe folder name", task_id=task_id)
    return task_id


def _create_unique(folder: Path, artifact: Artifact) -> tuple[str, BinaryIO]:
    """Reserve a name no other artifact of the task has; returns it and the open partial file.

    The final name is reserved with an empty placeholder (O_EXCL) so concurrent stores of
    equally named outputs (two nodes writing ``ComfyUI_00001_.png``) get distinct names."""
    base, node = safe_name(artifact.filename), safe_name(artifact.node_id)
    candidates = itertools.chain(  # lazily: nearly always the first one is free
        (base, f"{node}_{base}"), (f"{node}_{n}_{base}" for n in range(2, 1000))
    )
    for name in candidates:
        try:
            fd = os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        try:
            return name, open(folder / f".{name}.partial", "wb")
        except BaseException:
            _discard(folder, name)  # the placeholder must not outlive a failed store
            raise
    raise StorageError("too many artifacts with the same name", filename=artifact.filename)


def _discard(folder: Path, name: str) -> None:
    """Best effort: a cleanup failure must not replace the error that caused it."""
    for path in (folder / name, folder / f".{name}.partial"):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
