"""What models a deployment needs: a YAML manifest and seed 002's ``MODELS`` list.

Manifest (a list, or a mapping with a ``models`` list)::

    models:
      - url: https://example.com/x.safetensors   # plain http(s), resumable
        folder: checkpoints
        filename: x.safetensors                   # optional: from the URL / repo path
        sha256: 64 hex                            # optional, verified after download
        size: 6938078334                          # optional, bytes
      - repo: org/name                            # a Hugging Face repo ...
        file: split_files/vae/ae.safetensors      # ... and the file in it
        revision: main                            # optional
        folder: vae

``MODELS=RepoID:Filename:Target,...`` is the short form of Hugging Face entries. Errors name
the source, the entry index and the field, so a bad line is found without guessing.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from comfyfleet.errors import ManifestError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelEntry(BaseModel):
    """One model file: where it comes from and which folder it goes to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    repo: str | None = None
    file: str | None = None
    revision: str | None = None
    folder: str
    filename: str | None = None
    sha256: str | None = None
    size: int | None = Field(default=None, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            parsed = urlparse(v)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError(f"must look like 'org/name', got {v!r}")
        return v

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        path = PurePosixPath(v)
        if not v or path.is_absolute() or ".." in path.parts or "\\" in v:
            raise ValueError(f"must be a relative folder such as 'loras', got {v!r}")
        return str(path)

    @field_validator("filename")
    @classmethod
    def _filename(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or "\\" in v or v in (".", "..")):
            raise ValueError(f"must be a bare file name, got {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v.lower()):
            raise ValueError(f"must be 64 hex characters, got {v!r}")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _source(self) -> ModelEntry:
        if (self.url is None) == (self.repo is None):
            raise ValueError("give exactly one of 'url' or 'repo'")
        if self.repo is not None and not self.file:
            raise ValueError("'repo' needs 'file' (the path inside the repository)")
        if self.url is not None and (self.file or self.revision):
            raise ValueError("'file' and 'revision' only go with 'repo'")
        if self.url is not None and not self.filename and not _url_name(self.url):
            raise ValueError("the URL has no file name; add 'filename'")
        return self

    @property
    def name(self) -> str:
        """The file name on disk."""
        if self.filename:
            return self.filename
        if self.repo:
            return PurePosixPath(self.file or "").name
        return _url_name(self.url or "")

    @property
    def source(self) -> str:
        """Where it comes from, for messages."""
        if self.repo:
            rev = f"@{self.revision}" if self.revision else ""
            return f"hf://{self.repo}/{self.file}{rev}"
        return self.url or ""


def _url_name(url: str) -> str:
    return PurePosixPath(unquote(urlparse(url).path)).name


def _raise(source: str, index: int | None, error: ValidationError) -> None:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    fld = loc[0] if loc else None
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "is required"
    where = f"{source}: entry {index}" if index is not None else source
    text = f"{where}, field '{fld}': {msg}" if fld else f"{where}: {msg}"
    raise ManifestError(text, source=source, index=index, field=fld) from error


def parse_entries(data: Any, source: str) -> list[ModelEntry]:
    """Validate a loaded manifest document (a list, or ``{"models": [...]}``)."""
    if isinstance(data, dict):
        unknown = set(data) - {"models"}
        if unknown:
            raise ManifestError(
                f"{source}: unknown top-level key(s) {sorted(unknown)}; expected 'models'",
                source=source,
            )
        data = data.get("models")
    if data is None:
        return []
    if not isinstance(data, list):
        raise ManifestError(f"{source}: expected a list of entries", source=source)
    entries = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ManifestError(
                f"{source}: entry {i}: expected a mapping, got {type(item).__name__}",
                source=source,
                index=i,
            )
        try:
            entries.append(ModelEntry.model_validate(item))
        except ValidationError as e:
            _raise(source, i, e)
    _check_duplicates(entries, source)
    return entries


def _check_duplicates(entries: list[ModelEntry], source: str) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, e in enumerate(entries):
        key = (e.folder, e.name)
        if key in seen and entries[seen[key]] != e:
            raise ManifestError(
                f"{source}: entry {i}, field 'filename': {e.folder}/{e.name} is also "
                f"entry {seen[key]} with a different source",
                source=source,
                index=i,
                field="filename",
            )
        seen.setdefault(key, i)


def load_manifest(path: Path) -> list[ModelEntry]:
    """Read and validate a manifest file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e.strerror}", source=str(path)) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError(f"{path}: not valid YAML{at}", source=str(path)) from e
    return parse_entries(data, str(path))


def parse_models_env(value: str | None, source: str = "MODELS") -> list[ModelEntry]:
    """Parse seed 002's ``RepoID:Filename:Target,...`` (blank items are ignored)."""
    entries = []
    for i, item in enumerate(p.strip() for p in (value or "").split(",")):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 3 or not all(parts):
            raise ManifestError(
                f"{source}: entry {i} ({item!r}): expected RepoID:Filename:Target",
                source=source,
                index=i,
            )
        repo, file, folder = parts
        try:
            entries.append(ModelEntry(repo=repo, file=file, folder=folder))
        except ValidationError as e:
            _raise(source, i, e)
    _check_duplicates(entries, source)
    return entries
