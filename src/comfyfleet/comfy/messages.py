"""Typed views of what ComfyUI sends: websocket events, history entries and rejections.

Everything here is pure parsing. The shapes are those recorded from ComfyUI 0.8.0 in
``tests/fixtures/comfyui-protocol`` (see its README); anything unexpected degrades to a generic
error rather than a crash, because custom nodes put surprising things into these messages.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.errors import (
    ComfyError,
    ComfyFleetError,
    ComfyRejected,
    JobInterrupted,
    NodeExecutionError,
    WorkflowValidationError,
)

#: The message that ends every prompt: sent after its history entry is stored.
DONE = "executing"


@dataclass(slots=True)
class Event:
    """One websocket message: ``type``, ``data`` and the prompt it belongs to (if any)."""

    type: str
    data: dict[str, Any]
    prompt_id: str | None = None

    @property
    def is_done(self) -> bool:
        """``executing {node: null}``: the prompt finished and its history is written."""
        return self.type == DONE and self.data.get("node") is None


@dataclass(slots=True)
class Preview:
    """A binary preview frame (event 1: no metadata; event 4: with node/prompt metadata)."""

    event: int
    image: bytes
    media_type: str
    prompt_id: str | None = None
    node_id: str | None = None


def parse_text(raw: str) -> Event | None:
    """Parse a text frame; ``None`` for anything that is not ``{"type", "data": {...}}``."""
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
        return None
    data = msg["data"]
    return Event(str(msg.get("type")), data, data.get("prompt_id"))


def parse_binary(raw: bytes) -> Preview | None:
    """Parse a binary preview frame (big-endian u32 event type, then a per-type header)."""
    if len(raw) < 8:
        return None
    event, second = struct.unpack_from(">II", raw)
    if event == 1:
        return Preview(1, raw[8:], "image/png" if second == 2 else "image/jpeg")
    if event == 4 and len(raw) >= 8 + second:
        try:
            meta = json.loads(raw[8 : 8 + second])
        except ValueError:
            return None
        return Preview(
            4,
            raw[8 + second :],
            str(meta.get("image_type", "image/jpeg")),
            meta.get("prompt_id"),
            meta.get("node_id"),
        )
    return None


@dataclass(slots=True)
class HistoryEntry:
    """One prompt's ``/history/{id}`` entry."""

    prompt_id: str
    outputs: dict[str, dict[str, Any]]
    status_str: str | None = None
    completed: bool = False
    messages: list[Any] = field(default_factory=list)
    graph: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_response(cls, prompt_id: str, body: Any) -> HistoryEntry | None:
        """The entry for ``prompt_id`` in a ``/history`` body, or ``None`` if not (yet) there."""
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        if not isinstance(entry, dict):
            return None
        status = entry.get("status") or {}
        prompt = entry.get("prompt") or []
        graph = prompt[2] if len(prompt) > 2 and isinstance(prompt[2], dict) else {}
        return cls(
            prompt_id=prompt_id,
            outputs=entry.get("outputs") or {},
            status_str=status.get("status_str"),
            completed=bool(status.get("completed")),
            messages=status.get("messages") or [],
            graph=graph,
        )

    def failure(self) -> ComfyFleetError | None:
        """The error this entry records (node error or interrupt), if any."""
        for item in self.messages:
            if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], dict):
                error = failure_from_event(str(item[0]), item[1])
                if error is not None:
                    return error
        if self.status_str == "error":
            return ComfyError(f"prompt {self.prompt_id} failed without an error message")
        return None


def failure_from_event(kind: str, data: dict[str, Any]) -> ComfyFleetError | None:
    """``execution_error`` → `NodeExecutionError`; ``execution_interrupted`` → `JobInterrupted`."""
    if kind == "execution_error":
        node_id, node_type = data.get("node_id"), data.get("node_type")
        exc_type = data.get("exception_type") or "Exception"
        exc_msg = str(data.get("exception_message") or "").strip()
        return NodeExecutionError(
            f"node {node_id} ({node_type}) failed: {exc_type}: {exc_msg}",
            node_id=node_id,
            class_type=node_type,
            exception_type=exc_type,
            exception_message=exc_msg,
            traceback=data.get("traceback"),
        )
    if kind == "execution_interrupted":
        node_id, node_type = data.get("node_id"), data.get("node_type")
        return JobInterrupted(
            f"prompt interrupted at node {node_id} ({node_type})",
            node_id=node_id,
            class_type=node_type,
        )
    return None


_NODE_REF = re.compile(r"#([^'\"]+)")


def rejection(body: Any, graph: dict[str, Any]) -> ComfyFleetError:
    """Map ComfyUI's HTTP 400 body for ``POST /prompt`` to our error.

    Node errors become `WorkflowValidationError` entries naming node id, class and input;
    ``invalid_prompt`` (unknown class, missing class_type) names the node from its details;
    anything else (no outputs, no prompt) is `ComfyRejected`.
    """
    if not isinstance(body, dict):
        return ComfyRejected(f"ComfyUI rejected the prompt: {str(body)[:300]}")
    errors = node_errors(body.get("node_errors"))
    if errors:
        return WorkflowValidationError(errors)
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    kind, message = error.get("type"), error.get("message") or "rejected"
    ref = _NODE_REF.search(str(error.get("details") or ""))
    if kind == "invalid_prompt" and ref:
        node_id = ref.group(1)
        node = graph.get(node_id) if isinstance(graph.get(node_id), dict) else {}
        return WorkflowValidationError(
            [
                {
                    "node_id": node_id,
                    "class_type": node.get("class_type"),
                    "input_name": None,
                    "type": kind,
                    "message": message,
                }
            ]
        )
    return ComfyRejected(f"ComfyUI rejected the prompt: {message}", type=kind)


def node_errors(raw: Any) -> list[dict[str, Any]]:
    """Flatten ComfyUI's ``node_errors`` map into one entry per (node, input) problem."""
    if not isinstance(raw, dict):
        return []
    flat: list[dict[str, Any]] = []
    for node_id, node in raw.items():
        if not isinstance(node, dict):
            continue
        for err in node.get("errors") or []:
            extra = err.get("extra_info") or {}
            details = str(err.get("details") or "")
            message = str(err.get("message") or "invalid")
            flat.append(
                {
                    "node_id": str(node_id),
                    "class_type": node.get("class_type"),
                    "input_name": extra.get("input_name"),
                    "type": err.get("type"),
                    "message": f"{message}: {details}" if details else message,
                }
            )
    return flat
