"""How many of the official workflow templates (PyPI ``comfyui-workflow-templates-json``, a
test dependency) our UI → API converter converts against ComfyUI 0.8.0's recorded catalogue,
and why the rest are refused, grouped. Prints figures; asserts nothing.

The templates are saved by ComfyUI releases newer than 0.8.0, so many use node classes that
0.8.0 does not have, or newer versions of its classes: the share is also given for the
templates whose every class the catalogue has.

    python bench/ui_templates.py [--top 12] [--templates DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.testing.objectinfo import recorded_object_info
from comfyfleet.workflow.uiformat import is_ui_workflow, ui_to_api

VIRTUAL = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}


def default_root() -> Path:
    import comfyui_workflow_templates_json as package

    return Path(package.__file__).parent / "templates"


def classes(data: Mapping[str, Any]) -> set[str]:
    """Every node class a template uses, inside its subgraphs too (subgraph ids left out)."""
    subgraphs = (data.get("definitions") or {}).get("subgraphs") or []
    ids = {sg.get("id") for sg in subgraphs}
    found = {n.get("type") for graph in [data, *subgraphs] for n in graph.get("nodes") or []}
    return {c for c in found if c not in ids and c not in VIRTUAL and isinstance(c, str)}


def reason(message: str) -> tuple[str, str]:
    """``(group, detail)`` of a refusal, node ids and counts taken out."""
    text = message.split("; export it")[0].removeprefix(
        "cannot convert this UI-format workflow faithfully ("
    )
    text = text.removesuffix(")")
    unknown = re.match(r"node [\d:]+ is a '(.+?)', which this ComfyUI does not have", text)
    if unknown:
        return "needs a class this ComfyUI does not have", unknown.group(1)
    text = re.sub(r"node [\d:]+", "node N", text)
    text = re.sub(r"\d+ (widget values|widgets|output\(s\))", r"n \1", text)
    if text.endswith("the workflow was saved with a different version of the node"):
        return "saved with another version of a class", text.removesuffix(
            "; the workflow was saved with a different version of the node"
        )
    return "other", text


def templates(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if is_ui_workflow(data):
            yield path.name, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=12, help="details to list per group")
    parser.add_argument("--templates", type=Path, help="a folder of UI-format JSON files")
    args = parser.parse_args()
    catalogue = recorded_object_info()
    root = args.templates or default_root()
    total = converted = subgraphs = subgraphs_converted = known = known_converted = 0
    groups: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _name, data in templates(root):
        total += 1
        has_subgraphs = bool((data.get("definitions") or {}).get("subgraphs"))
        all_known = classes(data) <= set(catalogue)
        subgraphs += has_subgraphs
        known += all_known
        try:
            ui_to_api(data, catalogue)
        except WorkflowFormatError as exc:
            group, detail = reason(exc.message)
            groups[group][detail] += 1
            continue
        converted += 1
        subgraphs_converted += has_subgraphs
        known_converted += all_known
    print(f"templates (UI format): {total}  from {root}")
    print(f"converted: {converted} of {total} ({converted / total:.1%})")
    print(f"  using subgraphs: {subgraphs_converted} of {subgraphs}")
    if known:
        print(
            f"  of the {known} whose every node class this ComfyUI has: {known_converted} "
            f"({known_converted / known:.1%})"
        )
    print(f"refused: {total - converted}")
    for group, details in sorted(groups.items(), key=lambda g: -sum(g[1].values())):
        print(f"  {sum(details.values()):4d}  {group}:")
        for detail, count in details.most_common(args.top):
            print(f"        {count:4d}  {detail}")
        if len(details) > args.top:
            rest = sum(details.values()) - sum(c for _, c in details.most_common(args.top))
            print(f"        {rest:4d}  ... {len(details) - args.top} more")


if __name__ == "__main__":
    main()
