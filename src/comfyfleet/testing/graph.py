"""Execution order and output caching, as ComfyUI 0.8.0 does them.

* :class:`ExecutionList` is ComfyUI's topological "dissolve": output nodes are added, their
  uncached inputs pulled in, and the next node is picked with ComfyUI's UX heuristic (an output
  node first, then a node feeding an output, then one two steps away, else the first ready one).
  That is why a graph runs in dependency order, not id order (e.g. 3, 2, 1, 4, 5).
* :class:`OutputCache` is the default "classic" cache: a node's outputs are stored under its
  *input signature* (class, IS_CHANGED result, constant inputs and, recursively, the signatures
  of its ancestors), and only the entries used by the latest prompt are kept. An identical
  prompt is therefore fully cached; a failed node is never stored.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
    )


@dataclass
class CacheEntry:
    ui: dict[str, Any] | None  # {"meta": {...}, "output": {...}} for nodes with UI output
    outputs: list[list[Any]]  # per output slot, the list of values (one per list index)


class _Unhashable:
    """Never equal to anything else (ComfyUI's Unhashable: a NaN-valued marker)."""

    __slots__ = ()


def to_hashable(obj: Any) -> Any:
    if isinstance(obj, (int, float, str, bool, bytes, type(None))):
        return obj
    if isinstance(obj, Mapping):
        return frozenset((to_hashable(k), to_hashable(v)) for k, v in sorted(obj.items()))
    if isinstance(obj, Sequence):
        return frozenset(zip(itertools.count(), [to_hashable(i) for i in obj], strict=False))
    return _Unhashable()


class SignatureBuilder:
    """Cache keys of ComfyUI's CacheKeySetInputSignature."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_changed: Callable[[str], Any],
        includes_node_id: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_changed = is_changed
        self.includes_node_id = includes_node_id

    def key(self, node_id: str) -> Any:
        ancestors: list[str] = []
        order: dict[str, int] = {}
        self._ancestry(node_id, ancestors, order)
        signature = [self._immediate(node_id, order)]
        signature.extend(self._immediate(a, order) for a in ancestors)
        return to_hashable(signature)

    def _immediate(self, node_id: str, order: dict[str, int]) -> list[Any]:
        if node_id not in self.prompt:
            return [float("NaN")]
        node = self.prompt[node_id]
        class_type = node["class_type"]
        signature: list[Any] = [class_type, self.is_changed(node_id)]
        if self.includes_node_id(class_type):
            signature.append(node_id)
        inputs = node["inputs"]
        for key in sorted(inputs):
            value = inputs[key]
            if is_link(value):
                signature.append((key, ("ANCESTOR", order[value[0]], value[1])))
            else:
                signature.append((key, value))
        return signature

    def _ancestry(self, node_id: str, ancestors: list[str], order: dict[str, int]) -> None:
        if node_id not in self.prompt:
            return
        inputs = self.prompt[node_id]["inputs"]
        for key in sorted(inputs):
            value = inputs[key]
            if is_link(value):
                ancestor = value[0]
                if ancestor not in order:
                    ancestors.append(ancestor)
                    order[ancestor] = len(ancestors) - 1
                    self._ancestry(ancestor, ancestors, order)


class OutputCache:
    """``classic`` (ComfyUI's default) or ``none`` (``--cache-none``)."""

    def __init__(self, mode: str = "classic") -> None:
        if mode not in ("classic", "none"):
            raise ValueError(f"cache mode must be 'classic' or 'none', not {mode!r}")
        self.mode = mode
        self._store: dict[Any, CacheEntry] = {}
        self._keys: dict[str, Any] = {}

    def set_prompt(self, keys: dict[str, Any]) -> None:
        if self.mode == "none":
            return
        self._keys = keys
        used = set(keys.values())
        for key in [k for k in self._store if k not in used]:
            del self._store[key]

    def get(self, node_id: str) -> CacheEntry | None:
        if self.mode == "none":
            return None
        key = self._keys.get(node_id)
        if key is None:
            return None
        return self._store.get(key)

    def set(self, node_id: str, entry: CacheEntry) -> None:
        if self.mode == "none":
            return
        self._store[self._keys[node_id]] = entry

    def all_node_ids(self) -> set[str]:
        return set() if self.mode == "none" else set(self._keys)

    def clear(self) -> None:
        self._store.clear()
        self._keys = {}


class ExecutionList:
    """Which node runs next (ComfyUI's ExecutionList / TopologicalSort)."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
        is_lazy_input: Callable[[str, str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self._is_output_class = is_output
        self.is_lazy_input = is_lazy_input
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}
        self.staged: str | None = None

    def _is_output(self, node_id: str) -> bool:
        return self._is_output_class(self.prompt[node_id]["class_type"])

    def add_strong_link(self, from_id: str, from_socket: int, to_id: str) -> None:
        if not self.is_cached(from_id):
            self.add_node(from_id)
            if to_id not in self.blocking[from_id]:
                self.blocking[from_id][to_id] = {}
                self.block_count[to_id] += 1
            self.blocking[from_id][to_id][from_socket] = True

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, int, str]] = []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = True
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for name, value in self.prompt[uid]["inputs"].items():
                if is_link(value):
                    from_id, socket = value
                    if self.is_lazy_input(uid, name):
                        continue
                    if not self.is_cached(from_id):
                        stack.append(from_id)
                    links.append((from_id, socket, uid))
        for link in links:
            self.add_strong_link(*link)

    def is_empty(self) -> bool:
        return not self.pending

    def ready(self) -> list[str]:
        return [n for n in self.pending if self.block_count[n] == 0]

    def stage(self) -> str | None:
        """The next node to run, or None when a dependency cycle blocks everything."""
        assert self.staged is None
        available = self.ready()
        if not available:
            return None
        self.staged = self._pick(available)
        return self.staged

    def _pick(self, nodes: list[str]) -> str:
        for n in nodes:
            if self._is_output(n):
                return n
        for n in nodes:
            if any(self._is_output(b) for b in self.blocking[n]):
                return n
        for n in nodes:
            for b in self.blocking[n]:
                if any(self._is_output(b1) for b1 in self.blocking[b]):
                    return n
        return nodes[0]

    def complete(self) -> None:
        node_id = self.staged
        assert node_id is not None
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]
        self.staged = None

    def cycle_nodes(self) -> list[str]:
        blocked_by: dict[str, dict[str, bool]] = {n: {} for n in self.pending}
        for src, targets in self.blocking.items():
            for dst, sockets in targets.items():
                if True in sockets.values():
                    blocked_by[dst][src] = True
        remove = [n for n, b in blocked_by.items() if not b]
        while remove:
            for n in remove:
                for other in blocked_by.values():
                    other.pop(n, None)
                del blocked_by[n]
            remove = [n for n, b in blocked_by.items() if not b]
        return list(blocked_by)
