"""UI-format workflows (what ComfyUI's "Save" writes) converted to API format.

A UI workflow stores each node's widget values as a positional list (``widgets_values``) and its
wiring as a separate ``links`` table. Converting it means re-deriving, from the node catalogue
(``object_info``), which widgets the frontend built for each class and in which order, the way
the frontend's own "Export (API)" does:

* widgets follow the class's inputs (required, then optional, in ``input_order``); an input is a
  widget when its type is INT/FLOAT/STRING/BOOLEAN/a combo and it is not ``forceInput``;
* an INT named ``seed``/``noise_seed``, or any widget flagged ``control_after_generate``, is
  followed by a "control after generate" value ("randomize", "fixed", ...) that is dropped;
* file combos (``image_upload``, ...) may be followed by an upload-button value, dropped;
* a few classes get widgets of the frontend's own after theirs (`FRONTEND_ONLY_WIDGETS`:
  previews, players), whose trailing values are dropped;
* links become ``[str(origin_id), origin_slot]``; links through a ``Reroute`` are followed to
  their source; a link from a ``PrimitiveNode`` is dropped (its value is already the target's
  widget value); a link from a bypassed node (mode 4) is re-routed to the bypassed node's input
  of the same type, as the frontend does; muted nodes (mode 2) and notes are left out and
  links to them dropped.

Subgraphs are flattened first (`subgraphs`), with the ids the frontend's export gives their
nodes (``10:4``). A node saved with ``widgets_values_named`` is read by name, so widgets the
frontend adds of its own (upload buttons, previews) do not shift the values.

Anything that cannot be converted faithfully (group nodes, classes this ComfyUI does not have, a
widget count that does not match the class) is a `WorkflowFormatError` that tells
the user how to export the API format instead. Dynamic-prompt syntax (``{a|b}``), which the
frontend expands while exporting, is passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow.nodeinfo import (
    Graph,
    InputSpec,
    ObjectInfo,
    class_info,
    input_specs,
    node_sort_key,
)

EXPORT_HELP = (
    "export it in API format instead: in ComfyUI's current frontend use "
    "Workflow → Export (API); in the legacy frontend enable dev mode in the settings "
    "(gear icon) and use 'Save (API Format)'"
)
UI_FORMAT_MESSAGE = (
    "this is a UI-format workflow (the file ComfyUI's 'Save' writes, with 'nodes' and "
    "'links'), not the API format comfyfleet submits; " + EXPORT_HELP
)

VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
MUTED, BYPASSED = 2, 4

# Widgets the frontend appends to these classes of its own (previews, players, recorders): so
# many trailing ``widgets_values`` entries carry no input (checked against the official
# templates saved with ``widgets_values_named``).
FRONTEND_ONLY_WIDGETS = {
    "PreviewAny": 3,  # the markdown/plain-text preview
    "SaveGLB": 1,  # the 3D preview's image
    "Preview3D": 1,
    "LoadAudio": 1,  # the audio player
    "RecordAudio": 2,  # the recorder
    "GetImageSize": 1,  # the size display
}

_CONTROL = "<control_after_generate>"
_UPLOAD = "<upload>"


def is_ui_workflow(data: Any) -> bool:
    """True for a UI-format workflow: a top-level ``nodes`` list (API graphs are id-keyed)."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def widget_slots(info: Mapping[str, Any]) -> tuple[list[str], int]:
    """The names behind each ``widgets_values`` position, and how many trailing ones may be
    absent (upload buttons). Control and upload positions carry placeholder names."""
    slots: list[str] = []
    for spec in input_specs(info).values():
        if spec.is_dynamic:
            raise _unfaithful(f"class {info.get('name')!r} has dynamic inputs")
        if not spec.is_widget:
            continue
        slots.append(spec.name)
        if _has_control(spec):
            slots.append(_CONTROL)
        if spec.is_upload:
            slots.append(_UPLOAD)
    optional_tail = 0
    for name in reversed(slots):
        if name != _UPLOAD:
            break
        optional_tail += 1
    return slots, optional_tail


def _has_control(spec: InputSpec) -> bool:
    if spec.type == "INT" and spec.name in ("seed", "noise_seed"):
        return True
    return bool(spec.options.get("control_after_generate"))


def _unfaithful(reason: str, **details: Any) -> WorkflowFormatError:
    return WorkflowFormatError(
        f"cannot convert this UI-format workflow faithfully ({reason}); {EXPORT_HELP}", **details
    )


def _link_table(raw_links: Any) -> dict[int, tuple[int, int, str | None]]:
    """``link_id -> (origin_id, origin_slot, type)`` from list rows or (schema 1.0) objects."""
    table: dict[int, tuple[int, int, str | None]] = {}
    for row in raw_links or []:
        if isinstance(row, list) and len(row) >= 5:
            table[row[0]] = (row[1], row[2], row[5] if len(row) > 5 else None)
        elif isinstance(row, Mapping) and "id" in row:
            table[row["id"]] = (row["origin_id"], row["origin_slot"], row.get("type"))
        else:
            raise _unfaithful(f"unreadable link entry {row!r}")
    return table


class _Converter:
    def __init__(self, data: Mapping[str, Any], object_info: ObjectInfo) -> None:
        self.object_info = object_info
        self.links = _link_table(data.get("links"))
        self.nodes: dict[int, Mapping[str, Any]] = {}
        for node in data["nodes"]:
            if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
                raise WorkflowFormatError(f"UI-format node without 'id'/'type': {node!r:.200}")
            self.nodes[node["id"]] = node

    def convert(self) -> Graph:
        graph: Graph = {}
        linked: dict[str, list[str]] = {}
        for node_id in sorted(self.nodes, key=lambda i: node_sort_key(str(i))):
            node = self.nodes[node_id]
            if node["type"] in VIRTUAL_TYPES or node.get("mode") in (MUTED, BYPASSED):
                continue
            graph[str(node_id)], linked[str(node_id)] = self._node(node)
        for node_id, names in linked.items():  # the frontend drops links to nodes it left out
            inputs = graph[node_id]["inputs"]
            for name in names:
                if inputs[name][0] not in graph:
                    del inputs[name]
        return graph

    def _node(self, node: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        class_type = node["type"]
        info = class_info(self.object_info, class_type)
        if info is None:
            raise _unfaithful(
                f"node {node['id']} is a {class_type!r}, which this ComfyUI does not have, so its "
                "widget values cannot be mapped",
                node_id=str(node["id"]),
                class_type=class_type,
            )
        inputs = self._widget_values(node, info)
        linked: list[str] = []
        for entry in node.get("inputs") or []:
            link_id = entry.get("link")
            if link_id is None:
                continue
            source = self._resolve(link_id, entry.get("type"))
            if source is not None:
                self._check_slot(node, entry["name"], source)
                inputs[entry["name"]] = [str(source[0]), source[1]]
                linked.append(entry["name"])
        title = node.get("title") or info.get("display_name") or class_type
        return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}, linked

    def _check_slot(self, node: Mapping[str, Any], name: str, source: tuple[Any, int]) -> None:
        """A link to an output the source class does not have (saved with another version of
        the node) would be mis-wired: refuse it, naming both nodes."""
        origin = self.nodes[source[0]]
        info = class_info(self.object_info, origin["type"])
        outputs = (info or {}).get("output")
        if isinstance(outputs, list) and source[1] >= len(outputs):
            raise _unfaithful(
                f"node {node['id']} input {name!r} is linked to output {source[1]} of node "
                f"{origin['id']} ({origin['type']}), which has {len(outputs)} output(s) in this "
                "ComfyUI; the workflow was saved with a different version of the node",
                node_id=str(node["id"]),
                class_type=node["type"],
            )

    def _widget_values(self, node: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        values = _by_slot(self._positional(node, info))
        values.update(node.get("_overrides") or {})  # a subgraph instance's promoted values
        return values

    def _positional(self, node: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        slots, optional_tail = widget_slots(info)
        named = node.get("widgets_values_named")
        if isinstance(named, Mapping):  # by name: frontend-only widgets simply do not match
            return {name: named[name] for name in slots if name in named}
        values = node.get("widgets_values")
        if values is None:
            values = []
        if isinstance(values, Mapping):  # some nodes save widgets by name
            return {name: values[name] for name in slots if name in values}
        if not isinstance(values, list):
            raise _unfaithful(f"node {node['id']} has unreadable widgets_values")
        extra = FRONTEND_ONLY_WIDGETS.get(node["type"], 0)
        if not len(slots) - optional_tail <= len(values) <= len(slots) + extra:
            raise _unfaithful(
                f"node {node['id']} ({node['type']}) has {len(values)} widget values but this "
                f"ComfyUI's {node['type']} has {len(slots)} widgets; the workflow was saved with a "
                "different version of the node",
                node_id=str(node["id"]),
                class_type=node["type"],
            )
        return {
            name: value
            for name, value in zip(slots, values, strict=False)
            if name not in (_CONTROL, _UPLOAD)
        }

    def _resolve(self, link_id: int, want_type: str | None) -> tuple[int, int] | None:
        """Follow a link to the node that really produces the value (frontend semantics)."""
        seen: set[int] = set()
        link = self.links.get(link_id)
        while link is not None and link_id not in seen:
            seen.add(link_id)
            origin_id, origin_slot, _ = link
            origin = self.nodes.get(origin_id)
            if origin is None or origin.get("mode") == MUTED:
                return None
            origin_inputs = origin.get("inputs") or []
            if origin["type"] == "Reroute":
                link_id = origin_inputs[0].get("link") if origin_inputs else None
            elif origin["type"] in VIRTUAL_TYPES:
                return None  # PrimitiveNode: the value is already the target's widget value
            elif origin.get("mode") == BYPASSED:
                candidates = [origin_slot, *range(len(origin_inputs))]
                match = next(
                    (
                        origin_inputs[i]
                        for i in candidates
                        if i < len(origin_inputs) and origin_inputs[i].get("type") == want_type
                    ),
                    None,
                )
                link_id = match.get("link") if match else None
            else:
                return origin_id, origin_slot
            link = self.links.get(link_id) if link_id is not None else None
        return None


def _by_slot(values: dict[str, Any]) -> dict[str, Any]:
    """A list value would read as a link in API format; the frontend wraps it the same way."""
    return {k: {"__value__": v} if isinstance(v, list) else v for k, v in values.items()}


def ui_to_api(data: Mapping[str, Any], object_info: ObjectInfo) -> Graph:
    """Convert a UI-format workflow to an API-format graph, or raise `WorkflowFormatError`."""
    definitions = data.get("definitions") or {}
    if isinstance(definitions, Mapping) and definitions.get("subgraphs"):
        from comfyfleet.workflow.subgraphs import flatten

        data = flatten(data, _unfaithful)
    extra = data.get("extra") or {}
    if isinstance(extra, Mapping) and extra.get("groupNodes"):
        raise _unfaithful("it uses group nodes")
    return _Converter(data, object_info).convert()
