"""How many of the official workflow templates (PyPI ``comfyui-workflow-templates-json``, a
test dependency) our UI → API converter converts against ComfyUI 0.8.0's recorded catalogue,
and why the rest are refused. Prints figures; asserts nothing.

    python bench/ui_templates.py [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

import comfyui_workflow_templates_json as package

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.testing.objectinfo import recorded_object_info
from comfyfleet.workflow.uiformat import is_ui_workflow, ui_to_api


def reason(message: str) -> str:
    """The refusal with node ids and counts taken out, so equal causes group together."""
    text = message.split("; export it")[0].removeprefix(
        "cannot convert this UI-format workflow faithfully ("
    )
    text = re.sub(r"node [\d:]+", "node N", text)
    text = re.sub(
        r"has \d+ widget values but this ComfyUI's (\S+) has \d+", r"\1: widget count", text
    )
    return re.sub(r", which this ComfyUI does not have.*", " (class not in this ComfyUI)", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="refusal reasons to list")
    args = parser.parse_args()
    catalogue = recorded_object_info()
    root = Path(package.__file__).parent / "templates"
    total = converted = subgraphs = subgraphs_converted = 0
    reasons: collections.Counter[str] = collections.Counter()
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not is_ui_workflow(data):
            continue
        total += 1
        has_subgraphs = bool((data.get("definitions") or {}).get("subgraphs"))
        subgraphs += has_subgraphs
        try:
            ui_to_api(data, catalogue)
        except WorkflowFormatError as exc:
            reasons[reason(exc.message)] += 1
            continue
        converted += 1
        subgraphs_converted += has_subgraphs
    print(f"templates (UI format): {total}  from {root}")
    print(f"converted: {converted} ({converted / total:.1%})")
    print(f"  of which use subgraphs: {subgraphs_converted} of {subgraphs} such templates")
    print(f"refused: {total - converted}; most common reasons:")
    for text, count in reasons.most_common(args.top):
        print(f"  {count:4d}  {text}")


if __name__ == "__main__":
    main()
