"""Turning whatever a user sent into a clean API-format graph, or a precise error.

API format is ``{node_id: {"class_type": str, "inputs": {name: value | [src_id, slot]},
"_meta"?: {...}}}``. A link is a two-element list ``[source_node_id, output_slot]``; node ids are
strings. `parse_workflow` returns a fresh copy (callers may mutate it) in which links written
with an integer node id (``[4, 0]``) are normalised to ``["4", 0]``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from comfyfleet.errors import WorkflowFormatError
from comfyfleet.workflow.nodeinfo import Graph, ObjectInfo
from comfyfleet.workflow.uiformat import UI_FORMAT_MESSAGE, is_ui_workflow, ui_to_api

_WRAPPER_KEYS = ("prompt", "workflow", "input")


def parse_workflow(
    source: str | bytes | Mapping[str, Any], object_info: ObjectInfo | None = None
) -> Graph:
    """Parse JSON text or a decoded object into an API-format graph.

    A UI-format workflow is converted when ``object_info`` is given (see `uiformat`), and is a
    `WorkflowFormatError` explaining how to export the API format otherwise.
    """
    data = load_json(source) if isinstance(source, str | bytes | bytearray) else source
    if not isinstance(data, Mapping):
        raise WorkflowFormatError(
            "a workflow must be a JSON object mapping node ids to nodes "
            f'({{"3": {{"class_type": ..., "inputs": {{...}}}}}}), got {_kind(data)}'
        )
    if is_ui_workflow(data):
        if object_info is None:
            raise WorkflowFormatError(UI_FORMAT_MESSAGE)
        return ui_to_api(data, object_info)
    return {str(node_id): _node(str(node_id), node) for node_id, node in data.items()}


def load_json(text: str | bytes | bytearray) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(
            f"workflow is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except UnicodeDecodeError as exc:
        raise WorkflowFormatError(f"workflow is not UTF-8 text: {exc.reason}") from None


def _node(node_id: str, node: Any) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise WorkflowFormatError(
            f"node {node_id!r} must be an object with 'class_type' and 'inputs', got {_kind(node)}",
            node_id=node_id,
        )
    class_type = node.get("class_type")
    if class_type is None:
        hint = ""
        if node_id in _WRAPPER_KEYS and all(isinstance(v, Mapping) for v in node.values()):
            hint = f" (is this a request body? pass the graph inside {node_id!r} instead)"
        raise WorkflowFormatError(f"node {node_id!r} has no 'class_type'{hint}", node_id=node_id)
    if not isinstance(class_type, str) or not class_type:
        raise WorkflowFormatError(
            f"node {node_id!r}: 'class_type' must be a non-empty string, got {class_type!r}",
            node_id=node_id,
        )
    inputs = node.get("inputs", {})
    if not isinstance(inputs, Mapping):
        raise WorkflowFormatError(
            f"node {node_id!r} ({class_type}): 'inputs' must be an object, got {_kind(inputs)}",
            node_id=node_id,
            class_type=class_type,
        )
    out = copy.deepcopy(dict(node))
    out["inputs"] = {str(name): _value(copy.deepcopy(v)) for name, v in inputs.items()}
    return out


def _value(value: Any) -> Any:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    ):
        return [str(value[0]), value[1]]
    return value


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
