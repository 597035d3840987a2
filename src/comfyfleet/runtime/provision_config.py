"""What `comfyfleet provision` installs, read without pydantic.

The worker checks the volume before it launches ComfyUI, on the path where every 0.1 s counts
(see docs/worker.md, "Start-up"), so this module reads the ``COMFYFLEET_*`` variables itself,
under the names and defaults `comfyfleet.config.Settings` declares (a test checks that they
agree); the CLI builds the same object from `Settings`. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.envforms import split_list
from comfyfleet.errors import SettingsError

OFFICIAL_COMFYUI = "https://github.com/comfyanonymous/ComfyUI"
DEFAULT_REF = "v0.8.0"
DEFAULT_COMMIT = "fc0cb10bcbee6e73ed3caf34c27f7bde4559a07f"  # what v0.8.0 names
OFFICIAL_SWARMUI = "https://github.com/mcmonkeyprojects/SwarmUI"
SWARM_REF = "0.9.7-Beta"
SWARM_BUILD = "dotnet build src/SwarmUI.csproj --configuration Release -o ./src/bin/live_release"
SWARM_LAUNCH = "./launch-linux.sh --launch_mode none --host {host} --port {port}"
DEFAULT_BASES = (Path("/runpod-volume"), Path("/workspace"))
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


@dataclass(frozen=True)
class Source:
    """A git repository at a ref (tag, branch or commit); ``commit`` pins what the ref must be."""

    name: str
    url: str
    ref: str
    commit: str | None = None
    requirements: str = "requirements.txt"

    def pinned(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "ref": self.ref, "commit": self.commit}


@dataclass(frozen=True)
class SwarmSpec:
    source: Source
    build: str
    launch: str
    port: int


@dataclass(frozen=True)
class ProvisionConfig:
    root: Path
    comfyui: Source
    nodes: tuple[Source, ...] = ()
    swarm: SwarmSpec | None = None
    provision_index_url: str | None = None
    provision_extra_index_urls: tuple[str, ...] = ()
    provision_find_links: tuple[str, ...] = ()
    provision_no_index: bool = False
    mode: str = "off"
    extra_model_bases: tuple[Path, ...] = field(default=DEFAULT_BASES)
    model_roots: tuple[Path, ...] = ()

    # --- layout on the volume -------------------------------------------------------------
    @property
    def comfy_dir(self) -> Path:
        return self.root / "ComfyUI"

    @property
    def venv_dir(self) -> Path:
        return self.root / "venv"

    @property
    def venv_python(self) -> Path:
        return self.venv_dir / "bin" / "python"

    @property
    def swarm_dir(self) -> Path:
        return self.root / "SwarmUI"

    @property
    def state_dir(self) -> Path:
        return self.root / ".comfyfleet" / "provision"

    def pinned(self) -> dict[str, Any]:
        """What the final marker records; a later start compares it to decide 'warm'."""
        swarm = None
        if self.swarm is not None:
            swarm = self.swarm.source.pinned() | {"build": self.swarm.build}
        return {
            "comfyui": self.comfyui.pinned(),
            "custom_nodes": [n.pinned() | {"requirements": n.requirements} for n in self.nodes],
            "swarmui": swarm,
        }

    def pip_options(self) -> list[str]:
        opts: list[str] = []
        if self.provision_no_index:
            opts.append("--no-index")
        if self.provision_index_url:
            opts += ["--index-url", self.provision_index_url]
        for url in self.provision_extra_index_urls:
            opts += ["--extra-index-url", url]
        for link in self.provision_find_links:
            opts += ["--find-links", link]
        return opts

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProvisionConfig:
        """Read like `Settings()` (``COMFYFLEET_<FIELD>``, names case-insensitive)."""
        env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}

        def get(name: str, default: Any = None) -> Any:
            return env.get(f"comfyfleet_{name}", default)

        bases = get("volume_bases")
        values: dict[str, Any] = {
            "provision": get("provision", "off"),
            "provision_dir": get("provision_dir"),
            "volume_bases": _list(bases, "volume_bases") if bases is not None else None,
            "model_roots": _list(get("model_roots", ""), "model_roots"),
            "comfyui_repo": get("comfyui_repo", OFFICIAL_COMFYUI),
            "comfyui_ref": get("comfyui_ref", DEFAULT_REF),
            "comfyui_commit": get("comfyui_commit"),
            "custom_nodes": _list(get("custom_nodes", ""), "custom_nodes"),
            "custom_nodes_file": get("custom_nodes_file"),
            "provision_index_url": get("provision_index_url"),
            "provision_extra_index_urls": _list(
                get("provision_extra_index_urls", ""), "provision_extra_index_urls"
            ),
            "provision_find_links": _list(get("provision_find_links", ""), "provision_find_links"),
            "provision_no_index": _bool(get("provision_no_index", "false"), "provision_no_index"),
            "swarmui": _bool(get("swarmui", "false"), "swarmui"),
            "swarmui_repo": get("swarmui_repo", OFFICIAL_SWARMUI),
            "swarmui_ref": get("swarmui_ref", SWARM_REF),
            "swarmui_build": get("swarmui_build", SWARM_BUILD),
            "swarmui_launch": get("swarmui_launch", SWARM_LAUNCH),
            "swarmui_port": get("swarmui_port", "7801"),
        }
        return cls.build(values)

    @classmethod
    def from_settings(cls, settings: Any) -> ProvisionConfig:
        names = [
            "provision", "provision_dir", "volume_bases", "model_roots", "comfyui_repo",
            "comfyui_ref", "comfyui_commit", "custom_nodes", "custom_nodes_file",
            "provision_index_url", "provision_extra_index_urls", "provision_find_links",
            "provision_no_index", "swarmui", "swarmui_repo", "swarmui_ref", "swarmui_build",
            "swarmui_launch", "swarmui_port",
        ]  # fmt: skip
        return cls.build({n: getattr(settings, n) for n in names})

    @classmethod
    def build(cls, v: Mapping[str, Any]) -> ProvisionConfig:
        mode = str(v["provision"]).strip().lower()
        if mode not in ("off", "auto"):
            raise SettingsError(
                f"invalid setting: COMFYFLEET_PROVISION={v['provision']!r} (expected off or auto)"
            )
        bases = tuple(Path(p) for p in (v["volume_bases"] or DEFAULT_BASES))
        root = _root(v["provision_dir"], bases)
        commit = v["comfyui_commit"] or None
        if (
            commit is None
            and v["comfyui_ref"] == DEFAULT_REF
            and v["comfyui_repo"]
            in (
                OFFICIAL_COMFYUI,
                OFFICIAL_COMFYUI + ".git",
            )
        ):
            commit = DEFAULT_COMMIT
        comfy = Source("ComfyUI", v["comfyui_repo"], v["comfyui_ref"], commit)
        nodes = [
            parse_node(e, "COMFYFLEET_CUSTOM_NODES", i) for i, e in enumerate(v["custom_nodes"])
        ]
        if v["custom_nodes_file"]:
            nodes += read_nodes_file(Path(v["custom_nodes_file"]))
        names = [n.name for n in nodes]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise SettingsError(f"invalid setting: custom node {dup[0]!r} is listed twice")
        swarm = None
        if v["swarmui"]:
            try:
                port = int(v["swarmui_port"])
            except ValueError:
                raise SettingsError(
                    f"invalid setting: COMFYFLEET_SWARMUI_PORT={v['swarmui_port']!r} "
                    "(expected a whole number)"
                ) from None
            src = Source("SwarmUI", v["swarmui_repo"], v["swarmui_ref"], requirements="")
            swarm = SwarmSpec(src, v["swarmui_build"], v["swarmui_launch"], port)
        return cls(
            root=root,
            comfyui=comfy,
            nodes=tuple(nodes),
            swarm=swarm,
            provision_index_url=v["provision_index_url"] or None,
            provision_extra_index_urls=tuple(v["provision_extra_index_urls"]),
            provision_find_links=tuple(v["provision_find_links"]),
            provision_no_index=bool(v["provision_no_index"]),
            mode=mode,
            extra_model_bases=bases,
            model_roots=tuple(Path(p) for p in v["model_roots"]),
        )


def _root(given: Any, bases: tuple[Path, ...]) -> Path:
    if given:
        return Path(given).absolute()
    for base in bases:
        if base.is_dir():
            return base.absolute()
    shown = ", ".join(str(b) for b in bases)
    raise SettingsError(
        f"invalid setting: COMFYFLEET_PROVISION_DIR is not set and no volume is mounted "
        f"(none of {shown} exists); set it to the directory to install into"
    )


def repo_name(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".git") or "node"


def parse_node(entry: str, where: str, index: int) -> Source:
    """``URL@REF`` (``NAME=URL@REF`` to choose the folder name)."""
    name, _, rest = entry.partition("=") if re.match(r"^[\w.-]+=", entry) else ("", "", entry)
    url, sep, ref = rest.rpartition("@")
    if not sep or not url or not ref or "/" in ref:
        raise SettingsError(
            f"invalid setting: {where}[{index}]={entry!r}: expected URL@REF "
            "(e.g. https://github.com/city96/ComfyUI-GGUF@795e451...)"
        )
    return Source(name or repo_name(url), url, ref)


def read_nodes_file(path: Path) -> list[Source]:
    """docker/custom_nodes.txt's form: ``name url ref [requirements file]`` per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"invalid setting: COMFYFLEET_CUSTOM_NODES_FILE: {exc}") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) not in (3, 4):
            raise SettingsError(
                f"invalid setting: {path}:{no}: expected 'name url ref [requirements]', "
                f"got {line.strip()!r}"
            )
        out.append(
            Source(parts[0], parts[1], parts[2], requirements=[*parts, ""][3] or "requirements.txt")
        )
    return out


def _list(text: Any, name: str) -> list[str]:
    try:
        value = split_list(text)
    except ValueError as exc:
        raise SettingsError(f"invalid setting: COMFYFLEET_{name.upper()}: {exc}") from None
    return [str(x) for x in value]


def _bool(text: Any, name: str) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low not in _TRUE | _FALSE:
        raise SettingsError(
            f"invalid setting: COMFYFLEET_{name.upper()}={text!r} (expected true or false)"
        )
    return low in _TRUE
