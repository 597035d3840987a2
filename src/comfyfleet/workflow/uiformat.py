"""UI-format workflows (what ComfyUI's "Save" writes) converted to API format.

A UI workflow stores each node's widget values as a positional list (``widgets_values``) and its
wiring as a separate ``links`` table. Converting it means re-deriving, from the node catalogue
(``object_info``), which widgets the frontend built for each class and in which order, the way
the frontend's own "Export (API)" does (`widgets`: controls after seeds, upload buttons, V3
dynamic combos, previews of the frontend's own), then:

* links become ``[str(origin_id), origin_slot]``, resolved as the frontend's ExecutableNodeDTO
  does: through a ``Reroute`` to its source; through a bypassed node (mode 4) to the input its
  rule picks (`_bypass_input`); a link from a ``PrimitiveNode`` is not exported, its value is
  put in the widget it feeds; muted nodes (mode 2) and notes are left out and links to them
  dropped.

Subgraphs are flattened first (`subgraphs`), with the ids the frontend's export gives their
nodes (``10:4``). ``widgets_values`` is read by position, as the frontend loads it; a list
from another version of the class is settled as `widgets` says, by ``widgets_values_named``
when the file has them.

Anything that cannot be converted faithfully (group nodes, classes this ComfyUI does not have,
widget values or output slots from another version of the class, inputs the browser makes
while exporting) is a `WorkflowFormatError` naming the node that tells the user how to export
the API format instead. Dynamic-prompt syntax (``{a|b}``), which the frontend expands while
exporting, is passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow.nodeinfo import Graph, ObjectInfo, class_info, input_spec, node_sort_key
from comfyfleet.workflow.widgets import (
    FRONTEND_ONLY_WIDGETS,
    LayoutError,
    read_named,
    read_positional,
    widget_slots,
)
from comfyfleet.workflow.widgets import (
    has_control as widget_has_control,
)

__all__ = [
    "EXPORT_HELP",
    "FRONTEND_ONLY_WIDGETS",
    "UI_FORMAT_MESSAGE",
    "is_ui_workflow",
    "ui_to_api",
    "widget_slots",
]

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
PRIMITIVE = object()  # `_resolve`'s marker for a value from a PrimitiveNode


def is_ui_workflow(data: Any) -> bool:
    """True for a UI-format workflow: a top-level ``nodes`` list (API graphs are id-keyed)."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


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
            if source is None:
                continue
            if source[0] is PRIMITIVE:
                widget = (entry.get("widget") or {}).get("name")
                if widget in inputs:  # a widget this class has: the primitive's value in it
                    inputs[widget] = _by_slot({widget: source[1]})[widget]
                continue
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
        values = self._positional(node, info)
        # A subgraph instance's promoted values, for widgets this class has (a proxy may also
        # show a widget of the frontend's own, such as a seed's control).
        known = set(values) | set(widget_slots(info)[0])
        overrides = node.get("_overrides") or {}
        values.update({k: v for k, v in overrides.items() if k in known})
        return _by_slot(values)

    def _positional(self, node: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        """The frontend loads ``widgets_values`` by position (it reads ``widgets_values_named``,
        which newer ones save, only with its experimental NamedValuesRestore setting, off by
        default); the named values settle a list that does not fit this ComfyUI's widgets."""
        named = node.get("widgets_values_named")
        values = node.get("widgets_values")
        provided = {e.get("name") for e in node.get("inputs") or [] if e.get("link") is not None}
        provided.update(node.get("_overrides") or {})
        try:
            if isinstance(values, Mapping):  # some nodes save their widgets by name
                return read_named(info, values, provided)
            if values is None:
                values = []
            if not isinstance(values, list):
                raise LayoutError("has unreadable widgets_values", version_skew=False)
            try:
                return read_positional(info, values)
            except LayoutError:
                if not isinstance(named, Mapping):
                    raise
                return read_named(info, named, provided)  # frontend-only widgets do not match
        except LayoutError as exc:
            skew = "; the workflow was saved with a different version of the node"
            raise _unfaithful(
                f"node {node['id']} ({node['type']}) {exc}{skew if exc.version_skew else ''}",
                node_id=str(node["id"]),
                class_type=node["type"],
                input_name=exc.input_name,
            ) from None

    def _resolve(self, link_id: int, want_type: str | None) -> tuple[Any, Any] | None:
        """Follow a link to the node that really produces the value, as the frontend's
        ExecutableNodeDTO does: through Reroutes, and through bypassed nodes by the input
        `_bypass_input` picks. ``(PRIMITIVE, value)`` for a PrimitiveNode (whose value the
        frontend copies into the target widget before exporting); None for nothing."""
        seen: set[int] = set()
        link = self.links.get(link_id)
        while link is not None and link_id not in seen:
            seen.add(link_id)
            origin_id, origin_slot, _ = link
            origin = self.nodes.get(origin_id)
            if origin is None or origin.get("mode") == MUTED:
                return None  # the frontend drops inputs from nodes it leaves out
            origin_inputs = origin.get("inputs") or []
            if origin.get("mode") == BYPASSED:
                index = _bypass_input(origin, origin_slot, want_type)
                link_id = origin_inputs[index].get("link") if index is not None else None
            elif origin["type"] == "Reroute":
                link_id = origin_inputs[0].get("link") if origin_inputs else None
            elif origin["type"] == "PrimitiveNode":
                values = origin.get("widgets_values")
                return (PRIMITIVE, values[0]) if isinstance(values, list) and values else None
            elif origin["type"] in VIRTUAL_TYPES:
                return None
            else:
                return origin_id, origin_slot
            link = self.links.get(link_id) if link_id is not None else None
        return None


def _bypass_input(node: Mapping[str, Any], slot: int, want: Any) -> int | None:
    """The input a bypassed node passes to its output ``slot`` for a target of type ``want``:
    the same slot when its type fits both, else the first of exactly that type, else the first
    that fits both (the frontend's rule)."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    out_type = outputs[slot].get("type") if 0 <= slot < len(outputs) else None
    if want in ("*", "", None):
        return (slot if len(inputs) > slot else 0) if inputs else None

    def fits(i: int) -> bool:
        kind = inputs[i].get("type")
        return _type_fits(kind, out_type) and _type_fits(kind, want)

    if 0 <= slot < len(inputs) and fits(slot):
        return slot
    exact = next((i for i, e in enumerate(inputs) if e.get("type") == want), None)
    if exact is not None:
        return exact
    return next((i for i in range(len(inputs)) if fits(i)), None)


def _type_fits(a: Any, b: Any) -> bool:
    """LiteGraph's isValidConnection: "*" or empty fits anything, else one of each side's
    comma-separated types in common (case-insensitive)."""
    if a in ("", "*", None, 0) or b in ("", "*", None, 0) or a == b:
        return True
    left, right = str(a).lower().split(","), str(b).lower().split(",")
    return any(x == y or "*" in (x, y) for x in left for y in right)


def _by_slot(values: dict[str, Any]) -> dict[str, Any]:
    """A list value would read as a link in API format; the frontend wraps it the same way."""
    return {k: {"__value__": v} if isinstance(v, list) else v for k, v in values.items()}


def ui_to_api(data: Mapping[str, Any], object_info: ObjectInfo) -> Graph:
    """Convert a UI-format workflow to an API-format graph, or raise `WorkflowFormatError`."""
    definitions = data.get("definitions") or {}
    if isinstance(definitions, Mapping) and definitions.get("subgraphs"):
        from comfyfleet.workflow.subgraphs import flatten

        def has_control(class_type: str, widget: str) -> bool:
            spec = input_spec(object_info, class_type, widget)
            return spec is not None and widget_has_control(spec)

        data = flatten(data, _unfaithful, has_control)
    extra = data.get("extra") or {}
    if isinstance(extra, Mapping) and extra.get("groupNodes"):
        raise _unfaithful("it uses group nodes")
    return _Converter(data, object_info).convert()
