"""The gateway seen as one big ComfyUI: a queued task in ComfyUI's shapes (history entry, queue
row, websocket messages, 400 bodies) and the one way both ComfyUI-shaped faces (``/prompt`` for
ComfyUI clients and for Salad's comfyui-api clients) put a task on the queue.

A task's ComfyUI ``subfolder`` is its task id and its ``filename`` the artifact's stored name,
so ``/view?filename=F&subfolder=TASK&type=output`` finds it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from comfyfleet.errors import ComfyFleetError, WorkflowValidationError
from comfyfleet.gateway.intake import Submission, parse_submission, request_fingerprint
from comfyfleet.gateway.state import Gateway
from comfyfleet.queue import Task

_numbers = itertools.count()
_KEYS = {"image": "images", "video": "images", "audio": "audio", "file": "files"}


async def enqueue(
    gateway: Gateway, data: dict[str, Any], source: str, extra: dict[str, Any] | None = None
) -> tuple[Task, Submission]:
    """Validate ``data`` as a task body (every check of ``POST /api/v1/tasks``) and queue it;
    ``extra`` is kept with the payload (the ComfyUI client id and number)."""
    settings = gateway.settings
    submission = parse_submission(
        data,
        templates_dir=settings.templates_dir,
        default_template=settings.default_template,
        catalogues=gateway.fleet.catalogues(),
        allow_private_urls=settings.allow_private_urls,
    )
    options = submission.options
    task, created = await gateway.queue.submit(
        {**submission.payload(), "source": source, **(extra or {})},
        priority=options.priority,
        idempotency_key=options.idempotency_key,
        fingerprint=request_fingerprint(data) if options.idempotency_key else None,
        max_attempts=options.max_attempts or settings.max_attempts,
        timeout_seconds=submission.spec.timeout or settings.job_timeout,
        webhook_url=options.webhook,
        task_id=submission.spec.id,
        models=submission.models,
        checkpoint=submission.checkpoint,
    )
    if created:
        gateway.metrics.submitted.labels(source).inc()
    return task, submission


async def queue_remaining(gateway: Gateway) -> int:
    """ComfyUI's ``queue_remaining``: the fleet's queued and running tasks."""
    counts = (await gateway.queue.stats()).counts
    return counts.get("queued", 0) + counts.get("running", 0)


def next_number() -> int:
    """ComfyUI's ``number`` (its queue position counter), per gateway process."""
    return next(_numbers)


# --- errors -----------------------------------------------------------------------------------
def rejection(exc: ComfyFleetError, graph: Any) -> dict[str, Any]:
    """ComfyUI's 400 body for a refused prompt (as a real ComfyUI 0.8.0 answers)."""
    if isinstance(exc, WorkflowValidationError):
        unknown = [e for e in exc.node_errors if e.get("type") == "unknown_class_type"]
        if unknown:
            first = unknown[0]
            return _error(
                "invalid_prompt",
                f"Cannot execute because node {first.get('class_type')} does not exist.",
                f"Node ID '#{first.get('node_id')}'",
            )
        return {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            },
            "node_errors": node_errors(exc.node_errors, graph),
        }
    body = _error("invalid_prompt", exc.message, "")
    body["error"]["extra_info"] = {"code": exc.code, **exc.details}
    return body


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


def node_errors(errors: Sequence[dict[str, Any]], graph: Any) -> dict[str, Any]:
    """Our flat node errors grouped the way ComfyUI reports them."""
    outputs = output_nodes(graph)
    out: dict[str, Any] = {}
    for error in errors:
        node_id = str(error.get("node_id"))
        entry = out.setdefault(
            node_id,
            {"errors": [], "dependent_outputs": outputs, "class_type": error.get("class_type")},
        )
        extra: dict[str, Any] = {}
        if error.get("input_name"):
            extra["input_name"] = error["input_name"]
        entry["errors"].append(
            {
                "type": error.get("type"),
                "message": error.get("message"),
                "details": error.get("details") or error.get("input_name") or "",
                "extra_info": extra,
            }
        )
    return out


def output_nodes(graph: Any, catalogues: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The nodes ComfyUI runs the graph for: ``output_node`` classes in a backend's
    object_info, else (class unknown) those with a ``filename_prefix`` input."""
    if not isinstance(graph, dict):
        return []
    found = []
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        info = next(
            (c[node["class_type"]] for c in catalogues if node.get("class_type") in c), None
        )
        if (info is not None and info.get("output_node")) or (
            info is None and "filename_prefix" in (node.get("inputs") or {})
        ):
            found.append(str(node_id))
    return found


def unknown_classes(graph: dict[str, Any], catalogues: Sequence[dict[str, Any]]) -> bool:
    return any(
        isinstance(node, dict) and not any(node.get("class_type") in c for c in catalogues)
        for node in graph.values()
    )


# --- a task in ComfyUI's shapes ---------------------------------------------------------------
def stored_name(artifact: dict[str, Any]) -> str:
    """The name the artifact store serves it under (the last segment of its link)."""
    url = artifact.get("url")
    if isinstance(url, str) and "/artifacts/" in url:
        return unquote(url.rsplit("/", 1)[-1])
    return str(artifact.get("filename"))


def outputs(task_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """``{node_id: {"images": [{filename, subfolder, type}], "text": [...]}}``."""
    out: dict[str, Any] = {}
    for artifact in (result or {}).get("artifacts") or []:
        node = out.setdefault(str(artifact.get("node_id") or ""), {})
        if artifact.get("kind") == "text":
            node.setdefault("text", []).append(artifact.get("text"))
            continue
        key = _KEYS.get(str(artifact.get("kind")), "files")
        entry = {"filename": stored_name(artifact), "subfolder": task_id, "type": "output"}
        node.setdefault(key, []).append(entry)
        if artifact.get("kind") == "video":
            node["animated"] = [True]
    return out


def graph_of(task: Task) -> dict[str, Any]:
    spec = (task.payload or {}).get("spec") if isinstance(task.payload, dict) else None
    return (spec or {}).get("workflow") or {}


def comfy_meta(task: Task) -> dict[str, Any]:
    payload = task.payload if isinstance(task.payload, dict) else {}
    return payload.get("comfy") or {}


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value else int(time.time() * 1000)


def queue_row(task: Task) -> list[Any]:
    """``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    meta = comfy_meta(task)
    graph = graph_of(task)
    extra = {"client_id": meta.get("client_id"), "create_time": _ms(task.created_at)}
    return [meta.get("number", 0), task.id, graph, extra, output_nodes(graph)]


def history_entry(task: Task) -> dict[str, Any]:
    """A finished task as ``GET /history/{id}`` shows it."""
    ok = task.status == "succeeded"
    messages: list[list[Any]] = [
        ["execution_start", {"prompt_id": task.id, "timestamp": _ms(task.started_at)}]
    ]
    final = "execution_success" if ok else _final_type(task)
    messages.append([final, {"prompt_id": task.id, "timestamp": _ms(task.finished_at)}])
    produced = outputs(task.id, task.result)
    return {
        "prompt": queue_row(task),
        "outputs": produced,
        "status": {
            "status_str": "success" if ok else "error",
            "completed": ok,
            "messages": messages,
        },
        "meta": {
            node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
            for node in produced
        },
    }


def _final_type(task: Task) -> str:
    return "execution_interrupted" if task.status == "cancelled" else "execution_error"


class Translator:
    """The gateway's task events (`comfyfleet.gateway.sse`) as ComfyUI websocket messages for
    one prompt, ending with ``executing {node: null}`` as ComfyUI does."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.node: str | None = None

    def messages(self, name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        pid = self.prompt_id
        now = int(time.time() * 1000)
        if name == "started":
            return [
                {"type": "execution_start", "data": {"prompt_id": pid, "timestamp": now}},
                {
                    "type": "execution_cached",
                    "data": {"nodes": [], "prompt_id": pid, "timestamp": now},
                },
            ]
        if name == "progress":
            out = []
            node = data.get("node")
            if node is not None and node != self.node:
                self.node = str(node)
                out.append(_executing(self.node, pid))
            if node is not None and data.get("max"):
                out.append(
                    {
                        "type": "progress",
                        "data": {
                            "value": data.get("value") or 0,
                            "max": data["max"],
                            "prompt_id": pid,
                            "node": str(node),
                        },
                    }
                )
            return out
        if name != "finished":
            return []
        status = data.get("status")
        out = []
        if status == "succeeded":
            for node, output in outputs(pid, data.get("result")).items():
                out.append(
                    {
                        "type": "executed",
                        "data": {
                            "node": node,
                            "display_node": node,
                            "output": output,
                            "prompt_id": pid,
                        },
                    }
                )
            out.append({"type": "execution_success", "data": {"prompt_id": pid, "timestamp": now}})
        else:
            error = data.get("error") or {}
            details = error.get("details") or {} if isinstance(error, dict) else {}
            body = {
                "prompt_id": pid,
                "node_id": details.get("node_id", self.node),
                "node_type": details.get("class_type"),
                "executed": [],
            }
            if status == "cancelled":
                out.append({"type": "execution_interrupted", "data": body})
            else:
                message = error.get("message") if isinstance(error, dict) else str(error)
                body.update(
                    exception_message=message,
                    exception_type=error.get("code") if isinstance(error, dict) else "error",
                    traceback=[],
                    current_inputs={},
                    current_outputs={},
                )
                out.append({"type": "execution_error", "data": body})
        out.append(_executing(None, pid))
        return out


def _executing(node: str | None, prompt_id: str) -> dict[str, Any]:
    data: dict[str, Any] = {"node": node, "prompt_id": prompt_id}
    if node is not None:
        data["display_node"] = node
    return {"type": "executing", "data": data}
