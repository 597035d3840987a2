"""What a job gives back, the same from every target: a `Result` of `Output`s, and the
`ProgressEvent`s on the way. An output's bytes may have come inline (base64), as an S3 or
presigned URL, or as a gateway artifact link; `Result.save` writes every one into a folder."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# Downloads a URL (with the credentials its target needs, and only there) into a file.
Download = Callable[[str, Path], Awaitable[None]]


@dataclass
class Output:
    """One artifact. Exactly one of ``data`` (bytes), ``url`` or ``text`` carries it."""

    filename: str
    kind: str = "image"
    media_type: str = "application/octet-stream"
    node_id: str | None = None
    data: bytes | None = None
    url: str | None = None
    text: str | None = None
    size: int | None = None


@dataclass
class ProgressEvent:
    """A step of a job's life: ``status`` always; node and step numbers while it runs."""

    status: Status
    stage: str | None = None
    node: str | None = None
    class_type: str | None = None
    step: float | None = None
    steps: float | None = None
    percent: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.node is None:
            return self.stage or self.status
        what = f"node {self.node}" + (f" ({self.class_type})" if self.class_type else "")
        if self.steps:
            what += f" step {self.step or 0:g}/{self.steps:g}"
        return what


@dataclass
class Result:
    """A finished job. ``error`` is set (and `raise_for_status` raises it) unless it
    succeeded; ``raw`` is the target's own answer."""

    id: str
    status: Status
    outputs: list[Output] = field(default_factory=list)
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: Exception | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    _download: Download | None = field(default=None, repr=False)
    _portal: Any = field(default=None, repr=False)  # set by the blocking `Client`

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> Result:
        if self.error is not None:
            raise self.error
        return self

    def to_dict(self, paths: list[Path] | None = None) -> dict[str, Any]:
        """JSON-ready: outputs without their bytes (``path`` once saved), the error's body."""
        outputs = []
        for index, output in enumerate(self.outputs):
            item = {
                "filename": output.filename,
                "kind": output.kind,
                "media_type": output.media_type,
                "node_id": output.node_id,
                "size": output.size if output.size is not None else _size(output),
                "url": output.url,
                "text": output.text,
                "path": str(paths[index]) if paths and index < len(paths) else None,
            }
            outputs.append({k: v for k, v in item.items() if v is not None})
        error = self.error
        body = error.to_dict() if hasattr(error, "to_dict") else (str(error) if error else None)
        return {
            "id": self.id,
            "status": self.status,
            "outputs": outputs,
            "seeds": self.seeds,
            "timings": self.timings,
            "error": body,
        }

    def save(self, folder: str | Path) -> list[Path]:
        """`asave` for blocking code (results of `Client`; from `AsyncClient` use ``await
        result.asave(folder)``)."""
        if self._portal is not None:
            return self._portal.call(self.asave, folder)
        import asyncio

        return asyncio.run(self.asave(folder))

    async def asave(self, folder: str | Path) -> list[Path]:
        """Write every output into ``folder`` (created); never overwrites (``name (1).png``).
        Text outputs become ``.txt`` files. Returns the paths in output order."""
        from comfyfleet.errors import StorageError

        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for output in self.outputs:
            name = Path(output.filename).name or "output"
            if output.text is not None and output.data is None and output.url is None:
                name = name if name.endswith(".txt") else name + ".txt"
            path = _free_path(root / name)
            if output.data is not None:
                path.write_bytes(output.data)
            elif output.url is not None:
                if self._download is None:
                    raise StorageError(f"no way to download {output.url}", url=output.url)
                await self._download(output.url, path)
            elif output.text is not None:
                path.write_text(output.text, encoding="utf-8")
            else:
                raise StorageError(
                    f"output {output.filename} came back without its bytes",
                    filename=output.filename,
                )
            paths.append(path)
        return paths


def _size(output: Output) -> int | None:
    return len(output.data) if output.data is not None else None


def _free_path(path: Path) -> Path:
    if not path.exists():
        return path
    for number in range(1, 10_000):
        candidate = path.with_name(f"{path.stem} ({number}){path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(path)


def from_artifacts(artifacts: list[dict[str, Any]]) -> list[Output]:
    """comfyfleet's own artifact dicts (JobResult / gateway task result) as outputs."""
    outputs = []
    for item in artifacts:
        data = item.get("data")
        outputs.append(
            Output(
                filename=str(item.get("filename") or "output"),
                kind=str(item.get("kind") or "file"),
                media_type=str(item.get("media_type") or "application/octet-stream"),
                node_id=item.get("node_id"),
                data=base64.b64decode(data) if isinstance(data, str) else None,
                url=item.get("url") if data is None else None,
                text=item.get("text"),
                size=item.get("size"),
            )
        )
    return outputs


_OUTPUT_KEYS = {"images": "image", "videos": "video", "audio": "audio", "files": "file"}


def from_worker_output(output: dict[str, Any]) -> list[Output]:
    """The worker's ``{"images": [{filename, type, data}], "videos": [...], ...}`` with the
    metadata of ``output["comfyfleet"]["artifacts"]`` (node id, media type) where it has it."""
    meta: dict[str, list[dict[str, Any]]] = {}
    summary = output.get("comfyfleet")
    if isinstance(summary, dict):
        for artifact in summary.get("artifacts") or []:
            meta.setdefault(str(artifact.get("filename")), []).append(artifact)
    outputs = []
    for key, kind in [*_OUTPUT_KEYS.items(), ("text", "text")]:
        for entry in output.get(key) or []:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("filename") or "output")
            known = (meta.get(name) or [{}]).pop(0) if meta.get(name) else {}
            kind_of, data = entry.get("type"), entry.get("data")
            outputs.append(
                Output(
                    filename=name,
                    kind=str(known.get("kind") or kind),
                    media_type=str(known.get("media_type") or "application/octet-stream"),
                    node_id=known.get("node_id"),
                    data=base64.b64decode(data) if kind_of == "base64" and data else None,
                    url=data if kind_of == "s3_url" else None,
                    text=data if kind_of == "text" else known.get("text"),
                    size=known.get("size"),
                )
            )
    return outputs
