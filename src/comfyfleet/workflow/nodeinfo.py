"""Reading ComfyUI's ``GET /object_info`` (the node catalogue) and small graph helpers.

Everything that knows the catalogue's shape lives here, so injection, validation and UI
conversion agree on what an input's type, options and category are. Input specs come in two
forms that ComfyUI 0.8.0 both serves: ``[["a", "b"], {...}]`` (a V1 combo: the list is the type)
and ``["COMBO", {"options": [...]}]`` (V3); both are combos here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Graph = dict[str, dict[str, Any]]
"""An API-format graph: ``{node_id: {"class_type", "inputs": {name: value | [src_id, slot]}}}``."""

ObjectInfo = Mapping[str, Mapping[str, Any]]

COMBO = "COMBO"
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", COMBO})
DYNAMIC_TYPES = frozenset({"COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3"})
"""V3 inputs that expand into inputs the catalogue does not list; not checked."""
MATCHTYPE = "COMFY_MATCHTYPE_V3"
UPLOAD_FLAGS = ("image_upload", "audio_upload", "video_upload", "file_upload")


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class."""

    name: str
    type: Any  # str, or a list of options (V1 combo)
    options: dict[str, Any] = field(default_factory=dict)
    required: bool = True

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, list) or self.type == COMBO

    @property
    def combo_options(self) -> list[Any] | None:
        """The allowed values, or None when the list lives elsewhere (remote, uploads)."""
        if isinstance(self.type, list):
            return self.type
        if self.type == COMBO:
            opts = self.options.get("options")
            return list(opts) if isinstance(opts, list) else None
        return None

    @property
    def is_dynamic(self) -> bool:
        return isinstance(self.type, str) and self.type in DYNAMIC_TYPES

    @property
    def is_widget(self) -> bool:
        """True when the frontend shows it as a widget (its value is a literal, not a link)."""
        if self.options.get("forceInput"):
            return False
        return self.is_combo or self.type in WIDGET_TYPES

    @property
    def is_upload(self) -> bool:
        """A file combo whose list is the server's folder at the moment (stale in a cache)."""
        return any(self.options.get(flag) for flag in UPLOAD_FLAGS) or "remote" in self.options

    @property
    def link_type(self) -> Any:
        """The type a link into this input must carry (MatchType: its allowed types)."""
        if self.type == MATCHTYPE:
            template = self.options.get("template") or {}
            return template.get("allowed_types", "*")
        return COMBO if self.is_combo else self.type


def class_info(object_info: ObjectInfo, class_type: str) -> Mapping[str, Any] | None:
    info = object_info.get(class_type)
    return info if isinstance(info, Mapping) else None


def input_specs(info: Mapping[str, Any]) -> dict[str, InputSpec]:
    """Required then optional inputs, in the class's declared order (hidden ones left out)."""
    declared = info.get("input") or {}
    order = info.get("input_order") or {}
    specs: dict[str, InputSpec] = {}
    for category in ("required", "optional"):
        group = declared.get(category) or {}
        names = [n for n in order.get(category, []) if n in group]
        names += [n for n in group if n not in names]
        for name in names:
            raw = group[name]
            if not isinstance(raw, list | tuple) or not raw:
                continue
            opts = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
            specs[name] = InputSpec(name, raw[0], dict(opts), category == "required")
    return specs


def input_spec(object_info: ObjectInfo, class_type: str, name: str) -> InputSpec | None:
    info = class_info(object_info, class_type)
    return input_specs(info).get(name) if info is not None else None


def output_types(info: Mapping[str, Any]) -> list[Any]:
    return list(info.get("output") or [])


def output_names(info: Mapping[str, Any]) -> list[str]:
    return [str(n) for n in info.get("output_name") or []]


def is_output_class(info: Mapping[str, Any] | None) -> bool:
    return bool(info and info.get("output_node"))


_LINK_TYPES_CACHE: dict[int, tuple[ObjectInfo, frozenset[str]]] = {}


def link_types(object_info: ObjectInfo) -> frozenset[str]:
    """Every type some class outputs: an input of such a type must be linked, not a literal.

    Scanning all classes costs milliseconds, and a client reuses one object_info for every job,
    so the answer is kept per object_info instance (treat object_info as immutable).
    """
    hit = _LINK_TYPES_CACHE.get(id(object_info))
    if hit is not None and hit[0] is object_info:
        return hit[1]
    found: set[str] = set()
    for info in object_info.values():
        found.update(t for t in output_types(info) if isinstance(t, str))
    result = frozenset(found - WIDGET_TYPES - {"*"})
    if len(_LINK_TYPES_CACHE) >= 8:
        _LINK_TYPES_CACHE.clear()
    _LINK_TYPES_CACHE[id(object_info)] = (object_info, result)
    return result


def is_link(value: Any) -> bool:
    """``[source_node_id: str, output_slot: int]``: how API format says "from that output"."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def links(node: Mapping[str, Any]) -> Iterator[tuple[str, str, int]]:
    """``(input_name, source_id, slot)`` for every linked input of a node."""
    for name, value in (node.get("inputs") or {}).items():
        if is_link(value):
            yield name, value[0], value[1]


def node_sort_key(node_id: str) -> tuple[int, tuple[Any, ...]]:
    """Numeric node-id order: "2" < "10"; subgraph ids ("5:12") by their parts; text last."""
    parts = node_id.split(":")
    if all(p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts))
    return (1, (node_id,))


def sorted_ids(graph: Mapping[str, Any]) -> list[str]:
    return sorted(graph, key=node_sort_key)
