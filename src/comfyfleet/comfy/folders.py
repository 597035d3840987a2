"""Where one ComfyUI keeps its input and output files, as seen from this host.

A job can remove its files only where ComfyUI's folders are reachable here: ComfyUI has no
delete API, and it lists its input folder on every LoadImage, so leftovers slow every later
job down and fill the disk.

ComfyUI does not name its input or output folder anywhere in its API. ``GET
/internal/folder_paths`` (api_server/routes/internal/internal_routes.py) answers its
``folder_names_and_paths``: model folder name -> list of paths, in registration order. Its
main.py appends ``<output>/checkpoints``, ``<output>/clip`` (listed under ``text_encoders``),
``<output>/vae``, ``<output>/diffusion_models`` and ``<output>/loras`` to those lists (where
CheckpointSave & co. write), and the input folder sits next to the output folder, at
``<base>/input``, unless ``--input-directory`` moves it. Those are the candidates; none is
believed without proof: a marker file written into it here must come back, byte for byte,
from ComfyUI's own ``GET /view``. A path that exists on this host may still be another
machine's (a remote ComfyUI installed at the same path, a container), and the proof also shows
that this process may write, hence delete, there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from comfyfleet.errors import ComfyFleetError

FolderType = Literal["input", "output"]
# main.py's apply_custom_paths: model folder -> the subfolder of the output dir it appends.
OUTPUT_MODEL_FOLDERS = {
    "checkpoints": "checkpoints",
    "text_encoders": "clip",
    "vae": "vae",
    "diffusion_models": "diffusion_models",
    "loras": "loras",
}
MAX_CANDIDATES = 4  # proofs per folder type (each is a local write and one GET /view)


class FolderSource(Protocol):
    """What discovery needs of a ComfyUI client (`comfyfleet.comfy.http.ComfyHTTP`)."""

    url: str

    async def folder_paths(self) -> dict[str, list[str]] | None: ...

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> Any: ...


@dataclass(frozen=True, slots=True)
class ComfyFolders:
    """ComfyUI's input and output folders on this host (None: not reachable from here), how
    each was found (``settings``, ``learned``), and why an unknown one is unknown."""

    input: Path | None = None
    output: Path | None = None
    found: Mapping[str, str] | None = None
    notes: tuple[str, ...] = ()

    def get(self, kind: FolderType) -> Path | None:
        return self.input if kind == "input" else self.output


def candidates(paths: Mapping[str, Any]) -> dict[FolderType, list[Path]]:
    """The input and output folders a ``/internal/folder_paths`` answer points at, likeliest
    first (no filesystem calls). An output folder is a directory D whose main.py entries are
    all there; model roots (which also hold ``checkpoints``, ``vae``...) come after folders
    that hold no ``configs``, and main.py's entries, appended last, before earlier ones."""
    lists = {name: _paths(paths.get(name)) for name in (*OUTPUT_MODEL_FOLDERS, "configs")}
    configs = set(lists["configs"])
    outputs: list[Path] = []
    for entry in reversed(lists["checkpoints"]):
        base = entry.parent
        if entry.name != "checkpoints" or base in outputs:
            continue
        if all(base / sub in lists[name] for name, sub in OUTPUT_MODEL_FOLDERS.items()):
            outputs.append(base)
    outputs.sort(key=lambda base: base / "configs" in configs)  # stable: model roots last
    inputs = [base.parent / "input" for base in outputs]
    inputs += [entry.parent / "input" for entry in _paths(paths.get("custom_nodes"))]
    return {"input": _unique(inputs)[:MAX_CANDIDATES], "output": outputs[:MAX_CANDIDATES]}


async def proven(comfy: FolderSource, folder: Path, kind: FolderType) -> bool:
    """True if ComfyUI serves, as its ``kind`` folder, a marker file written into ``folder``
    here (the marker is removed again either way)."""
    name = f"comfyfleet-probe-{uuid.uuid4().hex}.txt"
    token = uuid.uuid4().hex.encode()
    marker = folder / name
    if not await asyncio.to_thread(_write, marker, token):
        return False
    try:
        got = b"".join([chunk async for chunk in comfy.view(name, "", kind)])
    except ComfyFleetError:
        return False
    finally:
        await asyncio.to_thread(_remove, marker)
    return got == token


async def discover(
    comfy: FolderSource, *, input: Path | None = None, output: Path | None = None
) -> ComfyFolders:
    """ComfyUI's folders here: the given ones (from settings, checked: a mismatch is noted but
    the setting stands), the others learned from ``/internal/folder_paths`` and proven."""
    given: dict[FolderType, Path | None] = {"input": input, "output": output}
    found: dict[str, str] = {}
    notes: list[str] = []
    for kind, folder in given.items():
        if folder is not None:
            found[kind] = "settings"
            if not await proven(comfy, folder, kind):
                notes.append(
                    f"the {kind} folder set in the settings ({folder}) does not hold what "
                    f"ComfyUI serves as {kind} (GET /view did not return a file written there)"
                )
    missing = [kind for kind, folder in given.items() if folder is None]
    if not missing:
        return ComfyFolders(input, output, found, tuple(notes))
    try:
        answer = await comfy.folder_paths()
    except ComfyFleetError as exc:
        answer, why = None, f"GET /internal/folder_paths failed: {exc.message}"
    else:
        why = "ComfyUI does not answer GET /internal/folder_paths"
    if answer is None:
        notes += [f"the {kind} folder is unknown: {why}" for kind in missing]
        return ComfyFolders(input, output, found, tuple(notes))
    options = candidates(answer)
    learned = dict(given)
    for kind in ("output", "input"):  # output first: the input folder sits next to it
        if learned[kind] is not None:
            continue
        listed = options[kind]
        if kind == "input" and learned["output"] is not None:
            listed = _unique([learned["output"].parent / "input", *listed])
        here = [folder for folder in listed if folder.is_dir()]
        for folder in here:
            if await proven(comfy, folder, kind):
                learned[kind], found[kind] = folder, "learned"
                break
        else:
            notes.append(_unknown(kind, listed, here))
    return ComfyFolders(learned["input"], learned["output"], found, tuple(notes))


def _unknown(kind: FolderType, listed: list[Path], here: list[Path]) -> str:
    if not listed:
        return f"the {kind} folder is unknown: ComfyUI's folder paths do not point at one"
    if not here:
        shown = " or ".join(str(p) for p in listed)
        return f"the {kind} folder is unknown: ComfyUI's ({shown}) is not on this host"
    shown = " or ".join(str(p) for p in here)
    return (
        f"the {kind} folder is unknown: {shown} is on this host but is not the folder "
        "ComfyUI serves (GET /view did not return a file written there), or is not writable"
    )


def _paths(value: Any) -> list[Path]:
    if not isinstance(value, list):
        return []
    return [Path(os.path.normpath(p)) for p in value if isinstance(p, str) and os.path.isabs(p)]


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _write(path: Path, data: bytes) -> bool:
    try:
        if not path.parent.is_dir():
            return False
        with path.open("xb") as f:
            f.write(data)
    except OSError:
        return False
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
