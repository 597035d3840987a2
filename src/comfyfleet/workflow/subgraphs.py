"""Subgraphs (``definitions.subgraphs``, the frontend's way to group nodes) flattened into one
UI-format graph, the way the frontend's "Export (API)" does it, so `uiformat` converts the
result like any other workflow.

A subgraph *instance* is a node whose ``type`` is a subgraph's id. Expanding it:

* its inner nodes take the ids ``<instance id>:<inner id>`` (nested: ``10:4:2``), as the
  frontend's export names them;
* an inner link from the subgraph's input node (id ``-10``, slot k) is re-attached to whatever
  feeds the instance's k-th input; an unlinked input gives its value instead: the instance's
  promoted widget value overrides the inner widget it feeds (one saved value per input that
  feeds an inner widget, in input order, older saves with a slot after a seed's control;
  ``proxyWidgets`` values go straight to the inner widgets they show); without one, the inner
  widget keeps its own value;
* a link from the instance's output k is re-attached to what feeds the subgraph's output node
  (id ``-20``) at slot k;
* a muted instance disappears with its contents; a bypassed one passes its inputs through by
  type, as any bypassed node.

Instances are expanded innermost first, so nested subgraphs work at any depth.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from comfyfleet.errors import WorkflowFormatError

INPUT_NODE, OUTPUT_NODE = -10, -20
# Subgraph input types that give the instance a widget (a V3 dynamic combo shows as a combo).
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"})
MAX_DEPTH = 32
CONTROL_SLOT = object()  # an instance's saved value for a promoted seed's control
Link = dict[str, Any]


def flatten(
    data: Mapping[str, Any],
    unfaithful: Any,
    has_control: Callable[[str, str], bool] = lambda _class, _widget: False,
) -> dict[str, Any]:
    """``data`` without subgraph instances (a new dict; ``data`` is not changed).
    ``unfaithful(reason, **details)`` builds the error for what cannot be expanded;
    ``has_control(class_type, widget)`` tells whether that widget has a control after it."""
    definitions = dict(_definitions(data))
    nodes, links = _Flattener(definitions, unfaithful, has_control).expand(
        data.get("nodes") or [], data.get("links") or [], prefix="", depth=0
    )
    out = {k: v for k, v in data.items() if k not in ("nodes", "links", "definitions")}
    out["nodes"], out["links"] = nodes, list(links.values())
    return out


def _definitions(graph: Mapping[str, Any], depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every subgraph definition by id: the root's, and those a definition carries itself (the
    schema allows both; the frontend saves all at the root)."""
    defined = graph.get("definitions")
    for sg in (defined.get("subgraphs") if isinstance(defined, Mapping) else None) or []:
        if isinstance(sg, Mapping) and "id" in sg:
            yield sg["id"], sg
            if depth < MAX_DEPTH:
                yield from _definitions(sg, depth + 1)


def _links(raw: Any, prefix: str, unfaithful: Any) -> dict[Any, Link]:
    """Links as objects with prefixed ids (the special -10/-20 endpoints kept as they are)."""
    table: dict[Any, Link] = {}
    for row in raw or []:
        if isinstance(row, list) and len(row) >= 5:
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot")
            link = dict(zip(keys, row[:5], strict=True))
            link["type"] = row[5] if len(row) > 5 else None
        elif isinstance(row, Mapping) and "id" in row:
            link = dict(row)
        else:
            raise unfaithful(f"unreadable link entry {row!r:.100}")
        link["id"] = _pid(prefix, link["id"])
        for end in ("origin_id", "target_id"):
            if link.get(end) not in (INPUT_NODE, OUTPUT_NODE):
                link[end] = _pid(prefix, link[end])
        table[link["id"]] = link
    return table


def _pid(prefix: str, value: Any) -> Any:
    return f"{prefix}{value}" if prefix else value


class _Flattener:
    def __init__(
        self,
        definitions: dict[str, Mapping[str, Any]],
        unfaithful: Any,
        has_control: Callable[[str, str], bool],
    ) -> None:
        self.definitions = definitions
        self.unfaithful = unfaithful
        self.has_control = has_control

    def expand(
        self, raw_nodes: list[Any], raw_links: Any, prefix: str, depth: int
    ) -> tuple[list[dict[str, Any]], dict[Any, Link]]:
        if depth > MAX_DEPTH:
            raise self.unfaithful(f"subgraphs nested deeper than {MAX_DEPTH} levels")
        links = _links(raw_links, prefix, self.unfaithful)
        nodes: list[dict[str, Any]] = []
        for raw in raw_nodes:
            if not isinstance(raw, Mapping) or "id" not in raw or "type" not in raw:
                raise WorkflowFormatError(f"UI-format node without 'id'/'type': {raw!r:.200}")
            node = copy.deepcopy(dict(raw))
            node["id"] = _pid(prefix, node["id"])
            for entry in node.get("inputs") or []:
                if entry.get("link") is not None:
                    entry["link"] = _pid(prefix, entry["link"])
            for entry in node.get("outputs") or []:
                if entry.get("links"):
                    entry["links"] = [_pid(prefix, lid) for lid in entry["links"]]
            nodes.append(node)
        out: list[dict[str, Any]] = []
        for node in nodes:
            definition = self.definitions.get(node["type"])
            if definition is None:
                out.append(node)
            elif node.get("mode") == 2:  # muted: gone, with everything inside
                continue
            elif node.get("mode") == 4:  # bypassed: `uiformat` passes its inputs through
                out.append(node)
            else:
                out.extend(self._instance(node, definition, links, depth))
        return out, links

    def _instance(
        self,
        node: dict[str, Any],
        definition: Mapping[str, Any],
        links: dict[Any, Link],
        depth: int,
    ) -> list[dict[str, Any]]:
        inst = node["id"]
        inner_nodes, inner_links = self.expand(
            definition.get("nodes") or [], definition.get("links") or [], f"{inst}:", depth + 1
        )
        by_id = {n["id"]: n for n in inner_nodes}
        sg_inputs = definition.get("inputs") or []
        feeds = self._instance_feeds(node, sg_inputs)
        values = self._promoted(node, definition, by_id)
        # Inner links from the input node: to the instance's feed, or its widget value.
        for lid, link in list(inner_links.items()):
            if link["origin_id"] != INPUT_NODE:
                continue
            slot = link["origin_slot"]
            name = sg_inputs[slot].get("name") if 0 <= slot < len(sg_inputs) else None
            outer_id = feeds.get(slot)
            outer = links.get(outer_id) if outer_id is not None else None
            if outer is not None:
                link["origin_id"], link["origin_slot"] = outer["origin_id"], outer["origin_slot"]
                continue
            del inner_links[lid]
            target = by_id.get(link["target_id"])
            if target is None:
                continue
            entry = _input_at(target, link["target_slot"])
            if entry is None:
                continue
            entry["link"] = None
            if name in values and entry.get("widget"):
                target.setdefault("_overrides", {})[entry["widget"]["name"]] = values[name]
        # Links out of the instance: from what feeds the output node.
        sources = {
            link["target_slot"]: (link["origin_id"], link["origin_slot"])
            for link in inner_links.values()
            if link["target_id"] == OUTPUT_NODE
        }
        for lid in [lid for lid, link in inner_links.items() if link["target_id"] == OUTPUT_NODE]:
            del inner_links[lid]
        for lid, link in list(links.items()):
            if link["origin_id"] != inst:
                continue
            source = sources.get(link["origin_slot"])
            if source is None:
                raise self.unfaithful(
                    f"node {link['target_id']} is linked to output {link['origin_slot']} of "
                    f"subgraph node {inst} ({definition.get('name')!r}), which nothing inside "
                    "the subgraph feeds",
                    node_id=str(link["target_id"]),
                )
            if source[0] == INPUT_NODE:  # passed straight through from an input
                outer = links.get(feeds.get(source[1]))
                if outer is None:
                    del links[lid]
                    continue
                source = (outer["origin_id"], outer["origin_slot"])
            link["origin_id"], link["origin_slot"] = source
        for link_id in feeds.values():  # the instance's own input links are consumed
            links.pop(link_id, None)
        links.update(inner_links)
        return inner_nodes

    @staticmethod
    def _instance_feeds(node: Mapping[str, Any], sg_inputs: list[Any]) -> dict[int, Any]:
        """Subgraph input slot -> the outer link feeding the instance there, matched by name (an
        instance lists only some of the inputs); by position only when both list them all."""
        entries = node.get("inputs") or []
        named = {e.get("name"): e for e in entries}
        positional = len(entries) == len(sg_inputs)
        feeds = {}
        for slot, sg_input in enumerate(sg_inputs):
            entry = named.get(sg_input.get("name"))
            if entry is None and positional:
                entry = entries[slot]
            if entry is not None and entry.get("link") is not None:
                feeds[slot] = entry["link"]
        return feeds

    def _promoted(
        self,
        node: Mapping[str, Any],
        definition: Mapping[str, Any],
        inner: dict[Any, dict[str, Any]],
    ) -> dict[str, Any]:
        """Values of the instance's promoted widgets, by subgraph input name, read by position
        as the frontend does (``widgets_values_named`` when no layout fits). ``proxyWidgets``
        values go straight into the inner widgets they show (returned empty then)."""
        named = node.get("widgets_values_named")
        values = node.get("widgets_values") or []
        if isinstance(values, Mapping):
            return dict(values)
        if not values:
            return dict(named) if isinstance(named, Mapping) else {}
        proxies = (node.get("properties") or {}).get("proxyWidgets")
        if isinstance(proxies, list) and len(proxies) == len(values):
            for proxy, value in zip(proxies, values, strict=True):
                if (
                    isinstance(proxy, list)
                    and len(proxy) == 2
                    and not str(proxy[1]).startswith("$$")
                ):
                    target = inner.get(f"{node['id']}:{proxy[0]}")
                    if target is not None:
                        target.setdefault("_overrides", {})[proxy[1]] = value
            return {}
        # The frontend gives the instance a widget for each input that feeds an inner widget
        # (older saves also keep a slot after each one whose inner widget has a seed's
        # control); still older saves are matched by the inputs' widget types.
        feeding = self._inputs_feeding_widgets(definition)
        by_link = [name for name, _ in feeding]
        with_controls = [
            slot
            for name, control in feeding
            for slot in ((name, CONTROL_SLOT) if control else (name,))
        ]
        by_type = [
            i.get("name")
            for i in definition.get("inputs") or []
            if str(i.get("type", "")).upper() in WIDGET_TYPES
        ]
        layout = next((c for c in (by_link, with_controls, by_type) if len(c) == len(values)), None)
        if layout is None and isinstance(named, Mapping):
            return dict(named)  # by name, as the frontend's NamedValuesRestore setting reads
        if layout is None:
            raise self.unfaithful(
                f"subgraph node {node['id']} ({definition.get('name')!r}) has {len(values)} "
                f"widget values for {len(by_link)} inputs that feed widgets",
                node_id=str(node["id"]),
                class_type=str(node["type"]),  # the subgraph's id: its "class" in the file
            )
        return {
            name: value
            for name, value in zip(layout, values, strict=True)
            if name is not CONTROL_SLOT
        }

    def _inputs_feeding_widgets(self, definition: Mapping[str, Any]) -> list[tuple[Any, bool]]:
        """``(name, has a control)`` of each subgraph input linked (inside) to an input that is
        a widget, in the subgraph's input order."""
        nodes = {n.get("id"): n for n in definition.get("nodes") or [] if isinstance(n, Mapping)}
        links = _links(definition.get("links"), "", self.unfaithful)
        found = []
        for sg_input in definition.get("inputs") or []:
            for link_id in sg_input.get("linkIds") or []:
                link = links.get(link_id)
                target = nodes.get(link["target_id"]) if link else None
                entry = _input_at(target, link["target_slot"]) if target else None
                widget = (entry or {}).get("widget")
                if link and link["origin_id"] == INPUT_NODE and widget:
                    control = self.has_control(str(target["type"]), str(widget.get("name")))
                    found.append((sg_input.get("name"), control))
                    break
        return found


def _input_at(node: Mapping[str, Any], slot: Any) -> dict[str, Any] | None:
    entries = node.get("inputs") or []
    return entries[slot] if isinstance(slot, int) and 0 <= slot < len(entries) else None
