"""Fault knobs of the test server.

Set them from Python (``srv.faults.node_delay = 0.5`` or ``srv.faults.update(...)``) or from any
process over HTTP: ``POST /_testing/faults`` with a JSON object of the fields below (merged into
the current settings; ``null`` resets one), ``GET /_testing/faults`` shows them and what has
fired, ``DELETE /_testing/faults`` resets all. ``POST /_testing/die`` kills the server (see
``ComfyTestServer.die``). These routes are not ComfyUI's and are never affected by the faults.

Fields:

``ws_drop_after`` (int)
    Cut a websocket (TCP abort, no close frame) right after it has been sent this many messages,
    counted per connection from its start or from when the knob was set. Later messages for it
    are lost, as on a network failure.
``ws_drop_times`` (int, default 1)
    How many connections to cut before ``ws_drop_after`` disarms itself; 0 = every one.
``ws_refuse_seconds`` (float)
    After each such drop, refuse websocket upgrades (HTTP 503) for this long.
``ws_refuse_for`` (float, write-only)
    Refuse websocket upgrades from now on for this many seconds (``faults.refuse_ws(s)``).
``history_write_delay`` (float)
    Wait this long between ``execution_success``/``_error`` and storing the history entry. The
    final ``status`` + ``executing {node: null}`` still come after the entry is stored, as in
    ComfyUI, so a client that treats ``executing null`` as done only gets the answer later; a
    client that treats ``execution_success`` as done reads ``{}`` from ``/history/{id}`` for that
    long (the real server's race, made deterministic).
``history_response_delay`` (float)
    Delay the answer of ``GET /history`` and ``GET /history/{id}`` by this long.
``node_delay`` (float) and ``node_delay_classes`` (list of class names or null = all)
    Every executed (not cached) node takes this much longer, spent after its ``executing``
    message. Like an ordinary slow ComfyUI node it cannot be interrupted midway: an interrupt
    takes effect when the next node starts.
``job_seconds`` (float)
    Each prompt takes at least this long from ``execution_start`` to its end. The time is spent
    inside the first node that runs, interruptible like a sampler step (within ~10 ms); a fully
    cached prompt spends it before ``execution_success``. Use with ``cache="none"`` when the same
    workflow is submitted repeatedly.
``fail_classes`` / ``fail_nodes`` (object: class name or node id -> message)
    Executing such a node raises ``<fail_exception_type>(message)`` -> ``execution_error``.
``fail_exception_type`` (str, default ``RuntimeError``)
    A builtin exception name, or a dotted name such as ``torch.OutOfMemoryError`` (reported as
    that ``exception_type``; the OOM one gets ComfyUI's out-of-memory tips appended).
``freeze`` (bool)
    Stop answering: HTTP requests hang and websocket messages are held back until unfrozen.
"""

from __future__ import annotations

import builtins
import threading
import time
from typing import Any

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before "
    "you might have accidentally set the batch_size to a large number."
)

_SETTINGS: dict[str, Any] = {
    "ws_drop_after": None,
    "ws_drop_times": 1,
    "ws_refuse_seconds": 0.0,
    "history_write_delay": 0.0,
    "history_response_delay": 0.0,
    "node_delay": 0.0,
    "node_delay_classes": None,
    "job_seconds": 0.0,
    "fail_classes": {},
    "fail_nodes": {},
    "fail_exception_type": "RuntimeError",
    "freeze": False,
}


class Faults:
    """Thread-safe fault settings plus counters of what fired."""

    ws_drop_after: int | None
    ws_drop_times: int
    ws_refuse_seconds: float
    history_write_delay: float
    history_response_delay: float
    node_delay: float
    node_delay_classes: list[str] | None
    job_seconds: float
    fail_classes: dict[str, str]
    fail_nodes: dict[str, str]
    fail_exception_type: str
    freeze: bool

    def __init__(self, **settings: Any) -> None:
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "on_ws_drop_armed", None)
        self._reset_state()
        self.update(**settings)

    def _reset_state(self) -> None:
        with self._lock:
            for name, default in _SETTINGS.items():
                object.__setattr__(self, name, _copy(default))
            object.__setattr__(self, "_ws_refuse_until", 0.0)
            object.__setattr__(self, "_ws_drops_left", None)
            object.__setattr__(self, "ws_drops", 0)
            object.__setattr__(self, "ws_refusals", 0)
            object.__setattr__(self, "failures_injected", 0)
            object.__setattr__(self, "nodes_delayed", 0)

    # -- setting ----------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS:
            self.update(**{name: value})
        else:
            object.__setattr__(self, name, value)

    def update(self, **settings: Any) -> Faults:
        """Change some knobs (None resets a knob to its default)."""
        with self._lock:
            for name, value in settings.items():
                if name == "ws_refuse_for":
                    self.refuse_ws(float(value or 0))
                    continue
                if name not in _SETTINGS:
                    raise ValueError(f"unknown fault knob {name!r}; known: {sorted(_SETTINGS)}")
                if value is None:
                    value = _copy(_SETTINGS[name])
                object.__setattr__(self, name, _check(name, value))
                if name in ("ws_drop_after", "ws_drop_times"):
                    left = self.ws_drop_times or None  # 0 = unlimited
                    object.__setattr__(self, "_ws_drops_left", left)
                    if self.on_ws_drop_armed is not None:
                        self.on_ws_drop_armed()
        return self

    def reset(self) -> None:
        self._reset_state()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            out = {name: _copy(getattr(self, name)) for name in _SETTINGS}
            out["ws_refusing_for"] = max(0.0, self._ws_refuse_until - time.monotonic())
            out["fired"] = {
                "ws_drops": self.ws_drops,
                "ws_refusals": self.ws_refusals,
                "failures_injected": self.failures_injected,
                "nodes_delayed": self.nodes_delayed,
            }
            return out

    # -- websocket --------------------------------------------------------------------------

    def refuse_ws(self, seconds: float) -> None:
        with self._lock:
            object.__setattr__(self, "_ws_refuse_until", time.monotonic() + max(0.0, seconds))

    def ws_refused(self) -> bool:
        with self._lock:
            if time.monotonic() < self._ws_refuse_until:
                object.__setattr__(self, "ws_refusals", self.ws_refusals + 1)
                return True
            return False

    def take_ws_drop(self, sent: int) -> bool:
        """Called after each message sent to a connection; True = cut it now."""
        with self._lock:
            n = self.ws_drop_after
            if n is None or sent < n:
                return False
            if self._ws_drops_left is not None:
                if self._ws_drops_left <= 0:
                    return False
                object.__setattr__(self, "_ws_drops_left", self._ws_drops_left - 1)
                if self._ws_drops_left == 0:
                    object.__setattr__(self, "ws_drop_after", None)
            object.__setattr__(self, "ws_drops", self.ws_drops + 1)
            if self.ws_refuse_seconds > 0:
                self.refuse_ws(self.ws_refuse_seconds)
            return True

    # -- execution --------------------------------------------------------------------------

    def delay_for(self, class_type: str) -> float:
        with self._lock:
            if self.node_delay <= 0:
                return 0.0
            if self.node_delay_classes is not None and class_type not in self.node_delay_classes:
                return 0.0
            object.__setattr__(self, "nodes_delayed", self.nodes_delayed + 1)
            return self.node_delay

    def failure_for(self, node_id: str, class_type: str) -> BaseException | None:
        with self._lock:
            message = self.fail_nodes.get(node_id)
            if message is None:
                message = self.fail_classes.get(class_type)
            if message is None:
                return None
            object.__setattr__(self, "failures_injected", self.failures_injected + 1)
            return make_exception(self.fail_exception_type, str(message))


def make_exception(type_name: str, message: str) -> BaseException:
    builtin = getattr(builtins, type_name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        return builtin(message)
    module, _, name = type_name.rpartition(".")
    cls = type(name or "Error", (Exception,), {"__module__": module or "builtins"})
    cls.__qualname__ = name or "Error"
    if type_name in ("torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError"):
        cls.comfy_oom = True  # type: ignore[attr-defined]
    return cls(message)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def _check(name: str, value: Any) -> Any:
    if name in ("ws_drop_after", "ws_drop_times"):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative integer")
        return value
    if name in (
        "ws_refuse_seconds",
        "history_write_delay",
        "history_response_delay",
        "node_delay",
        "job_seconds",
    ):
        value = float(value)
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
        return value
    if name in ("fail_classes", "fail_nodes"):
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be an object of name -> message")
        return {str(k): str(v) for k, v in value.items()}
    if name == "node_delay_classes":
        return None if value is None else [str(v) for v in value]
    if name == "fail_exception_type":
        return str(value)
    if name == "freeze":
        return bool(value)
    return value
