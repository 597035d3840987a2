"""Checking a graph against ComfyUI's node catalogue before it is submitted.

It follows what ComfyUI 0.8.0 does on ``POST /prompt`` (recorded in
``tests/fixtures/comfyui-protocol/c_validation_errors.json``, ``d_...``, ``e_...``) and reports
every problem at once as ``{"node_id", "class_type", "input_name", "type", "message", "details"}``.
``type`` is ComfyUI's own error type where it has one:

==========================  ==================================================================
``unknown_class_type``      class not in object_info (ComfyUI: ``invalid_prompt`` for the
                            whole prompt); checked for every node
``required_input_missing``  a required input is absent (optional/hidden ones never are)
``invalid_input_type``      a literal that is not of the input's type, or a literal where only
                            a link can go (a MODEL, IMAGE, ... input)
``value_smaller_than_min``  / ``value_bigger_than_max``: INT/FLOAT outside the declared range
``value_not_in_list``       a combo value (model file names included) not among the options
``return_type_mismatch``    linked output's type does not fit the input
``bad_linked_input``        a malformed link or an output slot the source does not have
``linked_node_missing``     a link to a node id not in the graph (ComfyUI: a KeyError
                            reported as ``exception_during_validation``)
``prompt_no_outputs``       no output node at all
==========================  ==================================================================

As in ComfyUI, inputs are checked only on nodes an output node depends on, an input may be a
link instead of a widget value, ``*`` matches any type, ``a,b`` types match either, INT accepts
a float only when it is whole, FLOAT accepts ints, and upload combos (``LoadImage.image``) are not
list-checked (their list is the input folder, which changes as files are uploaded). Unlike
ComfyUI, which runs the valid branches of a half-valid prompt, any error rejects the workflow,
and INT/FLOAT/BOOLEAN reject strings and booleans that ComfyUI would silently coerce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from comfyfleet.errors import WorkflowValidationError
from comfyfleet.workflow.nodeinfo import (
    MATCHTYPE,
    Graph,
    InputSpec,
    ObjectInfo,
    class_info,
    input_specs,
    is_link,
    link_types,
    node_sort_key,
    output_types,
    sorted_ids,
)

NodeError = dict[str, Any]


def validate_workflow(graph: Graph, object_info: ObjectInfo) -> None:
    """Raise `WorkflowValidationError` listing every problem `find_errors` finds."""
    errors = find_errors(graph, object_info)
    if not errors:
        return
    if errors[0]["node_id"] is None:  # prompt_no_outputs: about the graph, not one node
        raise WorkflowValidationError(errors, f"workflow is invalid: {errors[0]['message']}")
    raise WorkflowValidationError(errors)


def find_errors(graph: Graph, object_info: ObjectInfo) -> list[NodeError]:
    """Every validation problem in ``graph``, in node-id order."""
    errors: list[NodeError] = []
    unknown = False
    for node_id in sorted_ids(graph):
        class_type = graph[node_id]["class_type"]
        if class_info(object_info, class_type) is None:
            unknown = True
            errors.append(
                _error(
                    node_id,
                    class_type,
                    None,
                    "unknown_class_type",
                    f"node class {class_type!r} does not exist in this ComfyUI "
                    "(a custom node that is not installed?)",
                    f"Node ID '#{node_id}'",
                )
            )
    outputs = [
        n
        for n in sorted_ids(graph)
        if (class_info(object_info, graph[n]["class_type"]) or {}).get("output_node")
    ]
    if not outputs and not unknown:
        errors.append(
            _error(
                None,
                None,
                None,
                "prompt_no_outputs",
                "Prompt has no outputs: the workflow needs an output node such as SaveImage, "
                "PreviewImage or SaveVideo",
            )
        )
    checker = _NodeChecker(graph, object_info)
    for node_id in sorted(_needed_by(graph, outputs), key=node_sort_key):
        errors.extend(checker.check(node_id))
    return errors


def _needed_by(graph: Graph, outputs: list[str]) -> set[str]:
    """The output nodes and every node they depend on through links."""
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in graph:
            continue
        seen.add(node_id)
        stack.extend(v[0] for v in graph[node_id]["inputs"].values() if is_link(v))
    return seen


def _error(
    node_id: str | None,
    class_type: str | None,
    input_name: str | None,
    kind: str,
    message: str,
    details: str = "",
) -> NodeError:
    return {
        "node_id": node_id,
        "class_type": class_type,
        "input_name": input_name,
        "type": kind,
        "message": message,
        "details": details,
    }


class _NodeChecker:
    def __init__(self, graph: Graph, object_info: ObjectInfo) -> None:
        self.graph = graph
        self.object_info = object_info
        self.link_only = link_types(object_info)

    def check(self, node_id: str) -> list[NodeError]:
        node = self.graph[node_id]
        info = class_info(self.object_info, node["class_type"])
        if info is None:
            return []  # reported as unknown_class_type
        errors = []
        for spec in input_specs(info).values():
            if spec.is_dynamic:
                continue
            if spec.name not in node["inputs"]:
                if spec.required:
                    errors.append(
                        self._err(
                            node_id,
                            spec,
                            "required_input_missing",
                            "Required input is missing",
                            spec.name,
                        )
                    )
                continue
            value = node["inputs"][spec.name]
            problem = (
                self._link(node_id, spec, value)
                if isinstance(value, list)
                else self._literal(node_id, spec, value)
            )
            if problem:
                errors.append(problem)
        return errors

    def _err(self, node_id: str, spec: InputSpec, kind: str, msg: str, det: str) -> NodeError:
        return _error(node_id, self.graph[node_id]["class_type"], spec.name, kind, msg, det)

    def _link(self, node_id: str, spec: InputSpec, value: list[Any]) -> NodeError | None:
        if not is_link(value):
            return self._err(
                node_id,
                spec,
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index], "
                f"got {value!r}",
                spec.name,
            )
        source_id, slot = value
        source = self.graph.get(source_id)
        if source is None:
            return self._err(
                node_id,
                spec,
                "linked_node_missing",
                f"linked to node {source_id!r}, which is not in the workflow",
                repr(source_id),
            )
        source_info = class_info(self.object_info, source["class_type"])
        if source_info is None:
            return None  # reported as unknown_class_type
        outputs = output_types(source_info)
        if not 0 <= slot < len(outputs):
            return self._err(
                node_id,
                spec,
                "bad_linked_input",
                f"linked to output {slot} of node {source_id} ({source['class_type']}), "
                f"which has {len(outputs)} output(s)",
                spec.name,
            )
        received = outputs[slot]
        if spec.type == MATCHTYPE or _compatible(received, spec.link_type):
            return None
        expected = spec.link_type
        return self._err(
            node_id,
            spec,
            "return_type_mismatch",
            f"Return type mismatch between linked nodes: {spec.name}, received_type({received}) "
            f"mismatch input_type({expected}) (from node {source_id} {source['class_type']} "
            f"output {slot})",
            f"{spec.name}, received_type({received}) mismatch input_type({expected})",
        )

    def _literal(self, node_id: str, spec: InputSpec, value: Any) -> NodeError | None:
        if isinstance(value, Mapping) and "__value__" in value:
            value = value["__value__"]
        if spec.type == "*" or spec.type == MATCHTYPE:
            return None
        if spec.is_combo:
            return self._combo(node_id, spec, value)
        if isinstance(spec.type, str) and spec.type in self.link_only:
            return self._err(
                node_id,
                spec,
                "invalid_input_type",
                f"a {spec.type} input must be linked to another node's output "
                f"([node_id, slot]), got the value {value!r}",
                f"{spec.name}, {value!r}",
            )
        reason = _type_problem(spec.type, value)
        if reason:
            return self._err(
                node_id,
                spec,
                "invalid_input_type",
                f"Failed to convert an input value to a {spec.type} value: {reason}",
                f"{spec.name}, {value}, {reason}",
            )
        if spec.type not in ("INT", "FLOAT"):
            return None
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and value < low:
            return self._err(
                node_id,
                spec,
                "value_smaller_than_min",
                f"Value {value} smaller than min of {low}",
                spec.name,
            )
        if high is not None and value > high:
            return self._err(
                node_id,
                spec,
                "value_bigger_than_max",
                f"Value {value} bigger than max of {high}",
                spec.name,
            )
        return None

    def _combo(self, node_id: str, spec: InputSpec, value: Any) -> NodeError | None:
        options = spec.combo_options
        if options is None or spec.is_upload:
            return None
        chosen = value if spec.options.get("multiselect") and isinstance(value, list) else [value]
        if all(_hashable(v) and v in options for v in chosen):
            return None
        shown = f"(list of length {len(options)})" if len(options) > 20 else str(options)
        details = f"{spec.name}: '{value}' not in {shown}"
        return self._err(
            node_id, spec, "value_not_in_list", f"Value not in list: {details}", details
        )


def _hashable(value: Any) -> bool:
    return not isinstance(value, list | dict)


def _type_problem(kind: Any, value: Any) -> str | None:
    """Why ``value`` cannot be a ``kind`` value, or None when it can."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "INT":
        if isinstance(value, float) and number and not value.is_integer():
            return f"{value!r} is not a whole number"
        return None if number and math.isfinite(value) else f"{value!r} is not an integer"
    if kind == "FLOAT":
        return None if number and math.isfinite(value) else f"{value!r} is not a number"
    if kind == "BOOLEAN":
        ok = isinstance(value, bool) or (number and value in (0, 1))
        return None if ok else f"{value!r} is not true or false"
    if kind == "STRING":
        return None if isinstance(value, str) or number else f"{value!r} is not text"
    return None


def _compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input: equal, ``*``, overlapping ``a,b`` unions; a combo input
    takes a combo (or list) output."""
    if received == expected:
        return True
    if expected == "COMBO":
        return isinstance(received, list) or received in ("COMBO", "*")
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)
