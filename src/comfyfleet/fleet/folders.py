"""Each local backend's ComfyUI folders, so that every gateway job removes its own files.

`execute` already writes a job's inputs into ComfyUI's input folder and removes them, its
outputs and its output folder afterwards, failed, cancelled and interrupted jobs too, when it
is given the folders. This gives the gateway's local agents theirs:

- from the settings: ``backend_folders`` by backend name or URL, or, for a gateway with a
  single backend, ``COMFYFLEET_COMFY_INPUT_DIR`` / ``COMFYFLEET_COMFY_OUTPUT_DIR``;
- otherwise learned from ComfyUI itself (`comfyfleet.comfy.folders.discover`) at every first
  contact: the first health check that passes, and again after a failed one (a restarted
  ComfyUI may have moved them).

Where a folder stays unknown (a remote ComfyUI, paths that are not this host's) the outcome is
logged once, and the files jobs leave there are counted per backend — inputs uploaded, files
a finished prompt saved — in the backend's snapshot (``/api/v1/backends``, ``/api/v1/metrics``)
and as ``comfyfleet_backend_files_left_total``. Those are the files known to be left; a failed
prompt's partial outputs are not known and not counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from comfyfleet.comfy.folders import ComfyFolders, FolderSource, FolderType, discover
from comfyfleet.config import Settings
from comfyfleet.outputs.collect import collect

log = logging.getLogger(__name__)

KINDS: tuple[FolderType, FolderType] = ("input", "output")
Given = dict[FolderType, Path | None]


def configured(settings: Settings, name: str, url: str) -> Given:
    """The folders the settings give backend ``name`` (at ``url``): its ``backend_folders``
    entry (by name, else by URL), else the single-backend ``comfy_input_dir``/``_output_dir``
    when it is the gateway's only configured backend (not one a worker pool adds)."""
    folders = settings.backend_folders
    entry = folders.get(name) or folders.get(url) or folders.get(url.rstrip("/"))
    if entry is not None:
        return {kind: entry.get(kind) for kind in KINDS}
    single = settings.comfy_input_dir or settings.comfy_output_dir
    [sole] = settings.backends if len(settings.backends) == 1 else [""]
    if single and url in (sole.strip(), sole.partition("=")[2].strip()):
        return {"input": settings.comfy_input_dir, "output": settings.comfy_output_dir}
    if single:
        log.warning(
            "backend %s: COMFYFLEET_COMFY_INPUT_DIR/_OUTPUT_DIR apply to a gateway with one "
            "backend only; set COMFYFLEET_BACKEND_FOLDERS for several",
            name,
        )
    return {"input": None, "output": None}


class BackendFolders:
    """One local backend's folders: what the settings say, what was learned, what is left."""

    def __init__(self, name: str, given: Given) -> None:
        self.name = name
        self.given = given
        self.folders = self._as_given()
        self.learned = False  # a first contact has happened
        self.left = dict.fromkeys(KINDS, 0)
        self._runner: Any = None
        self._stale = True
        self._learning: asyncio.Future[ComfyFolders] | None = None
        self._said: tuple[Any, ...] | None = None

    @classmethod
    def for_backend(cls, settings: Settings, name: str, url: str) -> BackendFolders:
        return cls(name, configured(settings, name, url))

    @property
    def input(self) -> Path | None:
        return self.folders.input

    @property
    def output(self) -> Path | None:
        return self.folders.output

    # --- wiring -------------------------------------------------------------------------------
    def tally(self, client: Any) -> TallyingClient:
        """``client`` as the runner should hold it: counting the files left behind."""
        return TallyingClient(client, self)

    def follow(self, runner: Any) -> None:
        """Keep ``runner.input_dir`` / ``runner.output_dir`` (read by every run) on what is
        known, from now on and after every learning."""
        self._runner = runner
        self._apply()

    def checked(
        self, health: Callable[[], Awaitable[object]], comfy: FolderSource
    ) -> Callable[[], Awaitable[None]]:
        """The backend's health check, learning the folders once it passes after a start or a
        failure; every check running meanwhile (one per agent slot) waits for that learning, so
        no job starts before its folders are known. Learning never fails the check: unknown
        folders only cost cleanup."""

        async def check() -> None:
            try:
                await health()
            except BaseException:
                self._stale = True
                raise
            if self._stale:
                self._stale = False
                self._learning = asyncio.ensure_future(self.learn(comfy))
            if self._learning is not None:
                await asyncio.shield(self._learning)

        return check

    async def learn(self, comfy: FolderSource) -> ComfyFolders:
        try:
            self.folders = await discover(
                comfy, input=self.given.get("input"), output=self.given.get("output")
            )
        except Exception as exc:  # a ComfyUI that answers oddly: keep what the settings say
            log.warning("backend %s: learning ComfyUI's folders failed: %r", self.name, exc)
            self.folders = self._as_given()
        self.learned = True
        self._apply()
        self._announce()
        return self.folders

    def _as_given(self) -> ComfyFolders:
        """What the settings say, before (or instead of) learning."""
        given = {kind: "settings" for kind in KINDS if self.given.get(kind) is not None}
        return ComfyFolders(self.given.get("input"), self.given.get("output"), given)

    def _apply(self) -> None:
        if self._runner is not None:
            self._runner.input_dir = self.folders.input
            self._runner.output_dir = self.folders.output

    def _announce(self) -> None:
        """One log line per outcome (not per health check)."""
        folders = self.folders
        outcome = (folders.input, folders.output, folders.notes)
        if outcome == self._said:
            return
        self._said = outcome
        unknown = [kind for kind in KINDS if folders.get(kind) is None]
        if unknown:
            left = " and ".join("input files" if k == "input" else "outputs" for k in unknown)
            log.warning(
                "backend %s: %s. Its jobs leave their %s in ComfyUI's folders, counted as "
                "files_left in /api/v1/metrics and "
                'comfyfleet_backend_files_left_total{backend="%s"}; set '
                "COMFYFLEET_BACKEND_FOLDERS if this host sees those folders",
                self.name,
                "; ".join(folders.notes),
                left,
                self.name,
            )
            return
        log.log(
            logging.WARNING if folders.notes else logging.INFO,
            "backend %s: ComfyUI's folders here: input %s, output %s (%s); every job's files are "
            "removed after it%s",
            self.name,
            folders.input,
            folders.output,
            ", ".join(f"{k} {v}" for k, v in (folders.found or {}).items()),
            "".join(f"; but {note}" for note in folders.notes),
        )

    # --- operator view ------------------------------------------------------------------------
    def plan(self) -> str:
        """What the start-up banner says (before any contact with ComfyUI)."""
        given = {kind: self.given.get(kind) for kind in KINDS}
        if all(given.values()):
            return f"input {given['input']}, output {given['output']} (settings)"
        parts = [f"{kind} {folder} (settings)" for kind, folder in given.items() if folder]
        rest = " and ".join(kind for kind, folder in given.items() if not folder)
        parts.append(f"{rest} learned from ComfyUI when it answers (outcome in the log)")
        return "; ".join(parts)

    def snapshot(self) -> dict[str, Any]:
        """For the backend's snapshot: where its folders are and how many files jobs left."""
        folders = self.folders
        found = dict(folders.found or {})
        state: dict[str, dict[str, str] | None] = {}
        for kind in KINDS:
            folder = folders.get(kind)
            how = found.get(kind, "settings")
            state[kind] = None if folder is None else {"path": str(folder), "found": how}
        return {
            "folders": {**state, "learned": self.learned, "notes": list(folders.notes)},
            "files_left": dict(self.left),
        }


class TallyingClient:
    """A ComfyUI client that counts, while a folder is unknown, the files jobs leave in it:
    every input uploaded (the pipeline uploads only where it cannot write the file itself)
    and every output file of a finished prompt (the pipeline removes them where it knows the
    output folder). Everything else is the wrapped client's."""

    def __init__(self, client: Any, folders: BackendFolders) -> None:
        self._client = client
        self._folders = folders

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def upload(self, *args: Any, **kwargs: Any) -> Any:
        answer = await self._client.upload(*args, **kwargs)
        if kwargs.get("type", "input") == "input" and self._folders.input is None:
            self._folders.left["input"] += 1
        return answer

    async def wait(self, *args: Any, **kwargs: Any) -> Any:
        entry = await self._client.wait(*args, **kwargs)
        if self._folders.output is None:
            files = collect(entry, include_temp=False)
            self._folders.left["output"] += sum(1 for a in files if a.type == "output")
        return entry
