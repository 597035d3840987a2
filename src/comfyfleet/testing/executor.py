"""The prompt executor and its worker thread (ComfyUI 0.8.0's PromptExecutor + prompt_worker).

Prompts run one at a time, in queue order, in a worker thread. For one prompt the messages are:

``execution_start``, ``execution_cached {nodes}``, then per node in execution order either
(cached output node) ``executed`` + a ``progress_state`` with int 1/1, or ``progress_state``
(running) -> ``executing`` -> [``progress`` per step] -> [``executed`` for UI output] ->
``progress_state`` (finished); then ``execution_success`` (or ``execution_error`` /
``execution_interrupted`` and no success). The worker then stores the history entry, which
broadcasts ``status``, and finally sends ``executing {node: null, prompt_id}``.

Without a ``client_id`` only ``status``, ``progress_state``/``progress`` (to every client) and
``execution_interrupted`` (to every client) are sent, as in ComfyUI.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PIL import Image

from comfyfleet.testing import hub as hubmod
from comfyfleet.testing.faults import OOM_TIPS, Faults
from comfyfleet.testing.graph import (
    CacheEntry,
    ExecutionList,
    OutputCache,
    SignatureBuilder,
    is_link,
)
from comfyfleet.testing.nodes import NODES, NodeImpl
from comfyfleet.testing.objectinfo import Folders, NodeCatalog
from comfyfleet.testing.promptqueue import PromptQueue

log = logging.getLogger("comfyfleet.testing")

SUCCESS, FAILURE = "success", "failure"
MAX_PREVIEW_RESOLUTION = 512


class InterruptProcessingException(Exception):
    pass


InterruptProcessingException.__module__ = "comfy.model_management"


def full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def format_value(x: Any) -> Any:
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


@functools.cache
def _parameters(fn: Callable[..., Any]) -> tuple[bool, frozenset[str]]:
    params = inspect.signature(fn).parameters
    return any(p.kind is p.VAR_KEYWORD for p in params.values()), frozenset(params)


class ProgressRegistry:
    """Per-prompt node states; every change sends the whole non-pending map (progress_state)."""

    def __init__(self, prompt_id: str, send: Callable[[Any, Any], None], hub: Any, sid: Any):
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self._send = send
        self._hub = hub
        self._sid = sid

    def _entry(self, node_id: str) -> dict[str, Any]:
        if node_id not in self.nodes:
            self.nodes[node_id] = {"state": "pending", "value": 0, "max": 1}
        return self.nodes[node_id]

    def _publish(self) -> None:
        active = {
            nid: {
                "value": st["value"],
                "max": st["max"],
                "state": st["state"],
                "node_id": nid,
                "prompt_id": self.prompt_id,
                "display_node_id": nid,
                "parent_node_id": None,
                "real_node_id": nid,
            }
            for nid, st in self.nodes.items()
            if st["state"] != "pending"
        }
        self._send("progress_state", {"prompt_id": self.prompt_id, "nodes": active})

    def start(self, node_id: str) -> None:
        e = self._entry(node_id)
        e.update(state="running", value=0.0, max=1.0)
        self._publish()

    def update(self, node_id: str, value: Any, max_value: Any, image: Any = None) -> None:
        e = self._entry(node_id)
        e.update(state="running", value=value, max=max_value)
        self._publish()
        if image is not None and self._hub.supports_preview_metadata(self._sid):
            metadata = {
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            self._send(hubmod.PREVIEW_IMAGE_WITH_METADATA, (image, metadata))

    def finish(self, node_id: str) -> None:
        e = self._entry(node_id)
        e["state"] = "finished"
        e["value"] = e["max"]
        self._publish()


class _NodeContext:
    def __init__(self, executor: PromptExecutor, node_id: str) -> None:
        self._ex = executor
        self.node_id = node_id
        self.prompt_id = executor.prompt_id
        self.folders = executor.folders
        self.png_compress_level = executor.png_compress_level
        self.preview_enabled = executor.preview_method not in (None, "none")

    def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        self._ex.progress_hook(self.node_id, min(value, total), total, preview)

    def wait(self, seconds: float) -> None:
        self._ex.sleep(seconds)


class PromptExecutor:
    def __init__(
        self,
        hub: Any,
        catalog: NodeCatalog,
        folders: Folders,
        faults: Faults,
        *,
        cache: str = "classic",
        png_compress_level: int = 1,
        preview_method: str | None = None,
        nodes: dict[str, NodeImpl] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.hub = hub
        self.catalog = catalog
        self.folders = folders
        self.faults = faults
        self.nodes = NODES if nodes is None else nodes
        self.png_compress_level = png_compress_level
        self.default_preview_method = preview_method
        self.cache = OutputCache(cache)
        self.stop = stop or threading.Event()
        self._interrupt = False
        self._interrupt_lock = threading.Lock()
        # ComfyUI's server.client_id / last_node_id / last_prompt_id (read by the /ws route)
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.prompt_id = ""
        self.preview_method: str | None = None
        self.status_messages: list[tuple[str, dict[str, Any]]] = []
        self.history_result: dict[str, Any] = {"outputs": {}, "meta": {}}
        self.success = True

    def reset(self) -> None:
        """POST /free {free_memory}: drop the output cache."""
        self.cache.clear()

    # -- interrupts -------------------------------------------------------------------------

    def interrupt(self, value: bool = True) -> None:
        with self._interrupt_lock:
            self._interrupt = value

    def check_interrupt(self) -> None:
        with self._interrupt_lock:
            if self._interrupt:
                self._interrupt = False
                raise InterruptProcessingException()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stop.wait(seconds)

    # -- messages ---------------------------------------------------------------------------

    def send(self, event: Any, data: Any) -> None:
        self.hub.send_sync(event, data, self.client_id)

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.status_messages.append((event, data))
        if self.client_id is not None or broadcast:
            self.hub.send_sync(event, data, self.client_id)

    def progress_hook(self, node_id: str, value: Any, total: Any, preview: Any) -> None:
        self.check_interrupt()
        image = ("JPEG", preview, MAX_PREVIEW_RESOLUTION) if preview is not None else None
        self.progress.update(node_id, value, total, image)
        self.send(
            "progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
        )
        if image is not None and not self.hub.supports_preview_metadata(self.client_id):
            self.send(hubmod.UNENCODED_PREVIEW_IMAGE, image)

    # -- one prompt -------------------------------------------------------------------------

    def execute(
        self,
        prompt: dict[str, Any],
        prompt_id: str,
        extra_data: dict[str, Any],
        execute_outputs: list[str],
    ) -> None:
        self.interrupt(False)
        self.prompt_id = prompt_id
        self.preview_method = extra_data.get("preview_method", self.default_preview_method)
        self.client_id = extra_data.get("client_id")
        self.status_messages = []
        self.success = True
        started = time.monotonic()
        job_seconds = self.faults.job_seconds
        self._pad_until = started + job_seconds if job_seconds > 0 else None
        self.add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)

        self.prompt = prompt
        self.extra_data = extra_data
        self.progress = ProgressRegistry(prompt_id, self.send, self.hub, self.client_id)
        signatures = SignatureBuilder(prompt, self._is_changed_cached(prompt), self._keys_node_id)
        self.cache.set_prompt({node_id: signatures.key(node_id) for node_id in prompt})
        cached_nodes = [n for n in prompt if self.cache.get(n) is not None]
        self.add_message(
            "execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False
        )

        self.ui_outputs: dict[str, dict[str, Any]] = {}
        self.executed: set[str] = set()
        self.results: dict[str, CacheEntry] = {}
        elist = ExecutionList(
            prompt,
            is_cached=lambda n: self.cache.get(n) is not None,
            is_output=self.catalog.is_output_node,
            is_lazy_input=self._is_lazy_input,
        )
        current_outputs = self.cache.all_node_ids()
        for node_id in execute_outputs:
            elist.add_node(node_id)

        failed = False
        while not elist.is_empty():
            node_id = elist.stage()
            if node_id is None:
                blamed = elist.cycle_nodes()[0]
                error = {
                    "node_id": blamed,
                    "exception_message": "Dependency cycle detected",
                    "exception_type": "graph.DependencyCycleError",
                    "traceback": [],
                    "current_inputs": [],
                }
                self._handle_error(prompt_id, prompt, current_outputs, error, None)
                failed = True
                break
            result, error, ex = self._execute_node(node_id)
            self.success = result != FAILURE
            if result == FAILURE:
                self._handle_error(prompt_id, prompt, current_outputs, error, ex)
                failed = True
                break
            elist.complete()
        if not failed:
            if self._pad_until is not None:  # fully cached prompt: spend job_seconds here
                self.sleep(self._pad_until - time.monotonic())
                self._pad_until = None
            self.add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)

        self.history_result = {
            "outputs": {n: ui["output"] for n, ui in self.ui_outputs.items()},
            "meta": {n: ui["meta"] for n, ui in self.ui_outputs.items()},
        }
        self.last_node_id = None

    def _handle_error(self, prompt_id, prompt, current_outputs, error, ex) -> None:
        node_id = error["node_id"]
        class_type = prompt[node_id]["class_type"]
        if isinstance(ex, InterruptProcessingException):
            self.add_message(
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(self.executed),
                },
                broadcast=True,
            )
        else:
            self.add_message(
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(self.executed),
                    "exception_message": error["exception_message"],
                    "exception_type": error["exception_type"],
                    "traceback": error["traceback"],
                    "current_inputs": error["current_inputs"],
                    "current_outputs": list(current_outputs),
                },
                broadcast=False,
            )

    # -- catalog helpers --------------------------------------------------------------------

    def _spec(self, class_type: str) -> dict[str, Any]:
        info = self.catalog.static_info(class_type)
        return info["input"] if info else {}

    def _category(self, class_type: str, name: str) -> str | None:
        spec = self._spec(class_type)
        for category in ("required", "optional", "hidden"):
            if name in (spec.get(category) or {}):
                return category
        return None

    def _is_lazy_input(self, node_id: str, name: str) -> bool:
        spec = self._spec(self.prompt[node_id]["class_type"])
        for category in ("required", "optional"):
            entry = (spec.get(category) or {}).get(name)
            if entry is not None:
                extra = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                return bool(extra.get("lazy"))
        return False

    def _keys_node_id(self, class_type: str) -> bool:
        hidden = self._spec(class_type).get("hidden") or {}
        return any(v == "UNIQUE_ID" or v == ["UNIQUE_ID"] for v in hidden.values())

    def _is_changed_cached(self, prompt: dict[str, Any]) -> Callable[[str], Any]:
        memo: dict[str, Any] = {}

        def is_changed(node_id: str) -> Any:
            if node_id in memo:
                return memo[node_id]
            node = prompt[node_id]
            impl = self.nodes.get(node["class_type"])
            if impl is None or impl.is_changed is None:
                memo[node_id] = False
                return False
            ctx = _NodeContext(self, node_id)
            constants = {
                k: v
                for k, v in node["inputs"].items()
                if not is_link(v) and self._category(node["class_type"], k) is not None
            }
            try:
                value = [impl.is_changed(ctx, **constants)]
            except Exception as e:  # ComfyUI: warning + NaN (never equal: never cached)
                log.debug("IS_CHANGED failed for node %s: %s", node_id, e)
                value = float("NaN")
            node["is_changed"] = value
            memo[node_id] = value
            return value

        return is_changed

    # -- one node ---------------------------------------------------------------------------

    def _input_data(self, node_id: str) -> dict[str, list[Any]]:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        data: dict[str, list[Any]] = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                from_id, index = value[0], int(value[1])
                entry = self.results.get(from_id) or self.cache.get(from_id)
                if entry is None or entry.outputs is None or index >= len(entry.outputs):
                    data[name] = [None]
                    continue
                data[name] = entry.outputs[index]
            elif self._category(class_type, name) is not None:
                data[name] = [value]
        hidden = self._spec(class_type).get("hidden") or {}
        impl = self.nodes.get(class_type)
        wanted = (
            dict(impl.hidden)
            if impl is not None
            else {k: v for k, v in hidden.items() if isinstance(v, str)}
        )
        for name, kind in wanted.items():
            if kind == "PROMPT":
                data[name] = [self.prompt]
            elif kind == "EXTRA_PNGINFO":
                data[name] = [self.extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                data[name] = [node_id]
        return data

    def _execute_node(self, node_id: str) -> tuple[str, dict[str, Any] | None, Any]:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        cached = self.cache.get(node_id)
        if cached is not None:
            if self.client_id is not None:
                cached_ui = cached.ui or {}
                self.send(
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": cached_ui.get("output", None),
                        "prompt_id": self.prompt_id,
                    },
                )
                if cached.ui is not None:  # (ComfyUI only records it when there is a client)
                    self.ui_outputs[node_id] = cached.ui
            self.progress.finish(node_id)
            self.results[node_id] = cached
            return SUCCESS, None, None

        input_data = None
        try:
            self.progress.start(node_id)
            input_data = self._input_data(node_id)
            if self.client_id is not None:
                self.last_node_id = node_id
                self.send(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                )
            outputs, ui = self._run(node_id, class_type, input_data)
            if ui:
                self.ui_outputs[node_id] = {
                    "meta": {
                        "node_id": node_id,
                        "display_node": node_id,
                        "parent_node": None,
                        "real_node_id": node_id,
                    },
                    "output": ui,
                }
                if self.client_id is not None:
                    self.send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": ui,
                            "prompt_id": self.prompt_id,
                        },
                    )
            entry = CacheEntry(ui=self.ui_outputs.get(node_id), outputs=outputs)
            self.results[node_id] = entry
            self.cache.set(node_id, entry)
        except InterruptProcessingException as iex:
            log.info("Processing interrupted")
            return FAILURE, {"node_id": node_id}, iex
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            tips = OOM_TIPS if getattr(ex, "comfy_oom", False) else ""
            formatted: dict[str, Any] = {}
            if input_data is not None:
                formatted = {k: [format_value(x) for x in v] for k, v in input_data.items()}
            log.info("node %s (%s) failed: %s", node_id, class_type, ex)
            return (
                FAILURE,
                {
                    "node_id": node_id,
                    "exception_message": f"{ex}\n{tips}",
                    "exception_type": full_type_name(typ),
                    "traceback": traceback.format_tb(tb),
                    "current_inputs": formatted,
                },
                ex,
            )
        self.progress.finish(node_id)
        self.executed.add(node_id)
        return SUCCESS, None, None

    def _before_first_call(self, node_id: str, class_type: str) -> None:
        self.sleep(self.faults.delay_for(class_type))
        if self._pad_until is not None:  # job_seconds: interruptible, like sampler steps
            while not self.stop.is_set():
                remaining = self._pad_until - time.monotonic()
                if remaining <= 0:
                    break
                self.check_interrupt()
                self.stop.wait(min(0.01, remaining))
            self._pad_until = None
            self.check_interrupt()
        failure = self.faults.failure_for(node_id, class_type)
        if failure is not None:
            raise failure

    def _run(
        self, node_id: str, class_type: str, input_data: dict[str, list[Any]]
    ) -> tuple[list[list[Any]], dict[str, list[Any]]]:
        impl = self.nodes.get(class_type)
        ctx = _NodeContext(self, node_id)
        n = max((len(v) for v in input_data.values()), default=0)
        calls = (
            [{}]
            if n == 0
            else [{k: v[i if len(v) > i else -1] for k, v in input_data.items()} for i in range(n)]
        )
        returns = []
        for i, kwargs in enumerate(calls):
            self.check_interrupt()  # ComfyUI's before_node_execution()
            if i == 0:
                self._before_first_call(node_id, class_type)
            if impl is None:
                raise NotImplementedError(
                    f"{class_type} is not implemented by the comfyfleet test server "
                    "(comfyfleet.testing executes only a few image nodes; it validates all "
                    "classes of ComfyUI 0.8.0)"
                )
            accepts_all, params = _parameters(impl.fn)
            call = {k: v for k, v in kwargs.items() if accepts_all or k in params}
            returns.append(impl.fn(ctx, **call))

        results, uis = [], []
        for r in returns:
            if isinstance(r, dict):
                if "ui" in r:
                    uis.append(r["ui"])
                if "result" in r:
                    results.append(r["result"])
            else:
                results.append(r)
        outputs = [[r[i] for r in results] for i in range(len(results[0]))] if results else []
        ui: dict[str, list[Any]] = {}
        if uis:
            ui = {k: [y for x in uis for y in x[k]] for k in uis[0]}
        return outputs, ui


class Worker:
    """The prompt_worker thread: take the next item, execute, store history, send the end."""

    def __init__(
        self, queue: PromptQueue, executor: PromptExecutor, hub: Any, faults: Faults
    ) -> None:
        self.queue = queue
        self.executor = executor
        self.hub = hub
        self.faults = faults
        self.stop = executor.stop
        self.thread = threading.Thread(target=self._run, name="comfy-test-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.queue.close()
        self.executor.interrupt(True)
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stop.is_set():
            got = self.queue.get(timeout=0.5)
            if got is not None and not self.stop.is_set():
                self._process(*got)
            flags = self.queue.take_flags()
            if flags.get("free_memory"):
                self.executor.reset()

    def _process(self, item: tuple[Any, ...], item_id: int) -> None:
        ex = self.executor
        prompt_id = item[1]
        ex.last_prompt_id = prompt_id
        extra_data = dict(item[3])
        extra_data.update(item[5])
        try:
            ex.execute(item[2], prompt_id, extra_data, item[4])
        except Exception:  # a bug in the test server must not wedge the queue
            log.exception("test server executor crashed on prompt %s", prompt_id)
            ex.success = False
            ex.history_result = {"outputs": {}, "meta": {}}
        ex.sleep(self.faults.history_write_delay)
        if self.stop.is_set():
            return
        self.queue.task_done(
            item_id,
            ex.history_result,
            {
                "status_str": "success" if ex.success else "error",
                "completed": ex.success,
                "messages": ex.status_messages,
            },
        )
        if ex.client_id is not None:
            self.hub.send_sync("executing", {"node": None, "prompt_id": prompt_id}, ex.client_id)
