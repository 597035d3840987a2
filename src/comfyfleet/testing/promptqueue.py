"""The prompt queue and history, with ComfyUI 0.8.0's semantics.

A queue item is ``(number, prompt_id, prompt, extra_data, outputs_to_execute, sensitive)``; the
queue is a heap on that tuple, so items run in ``number`` order (``front`` posts get a negative
number). ``GET /queue`` shows the heap as stored. The running item is a deep copy taken when the
worker picks it; that copy is what ``/queue`` and the history entry show. Every change of the
queue broadcasts a ``status`` message.
"""

from __future__ import annotations

import copy
import heapq
import threading
from collections.abc import Callable
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000


class PromptQueue:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.task_counter = 0
        self.queue: list[tuple[Any, ...]] = []
        self.currently_running: dict[int, tuple[Any, ...]] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.flags: dict[str, Any] = {}
        self.closed = False

    def put(self, item: tuple[Any, ...]) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self._on_change()
            self.not_empty.notify()

    def get(self, timeout: float | None = None) -> tuple[tuple[Any, ...], int] | None:
        with self.not_empty:
            while not self.queue:
                if self.closed:
                    return None
                self.not_empty.wait(timeout=timeout)
                if timeout is not None and not self.queue:
                    return None
            if self.closed:
                return None
            item = heapq.heappop(self.queue)
            i = self.task_counter
            self.currently_running[i] = copy.deepcopy(item)
            self.task_counter += 1
            self._on_change()
            return item, i

    def close(self) -> None:
        with self.not_empty:
            self.closed = True
            self.not_empty.notify_all()

    def task_done(
        self, item_id: int, history_result: dict[str, Any], status: dict[str, Any] | None
    ) -> None:
        with self.mutex:
            prompt = self.currently_running.pop(item_id)
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            prompt = prompt[:5]  # the sensitive extra_data keys are never stored
            # A duplicate prompt_id replaces the earlier entry (keeping its place in the dict).
            self.history[prompt[1]] = {
                "prompt": prompt,
                "outputs": {},
                "status": copy.deepcopy(status) if status is not None else None,
            }
            self.history[prompt[1]].update(history_result)
            self._on_change()

    def get_current_queue(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with self.mutex:
            return list(self.currently_running.values()), list(self.queue)

    def tasks_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []
            self._on_change()

    def delete_queue_item(self, predicate: Callable[[tuple[Any, ...]], bool]) -> bool:
        with self.mutex:
            for x in range(len(self.queue)):
                if predicate(self.queue[x]):
                    if len(self.queue) == 1:
                        self.wipe_queue()
                    else:
                        self.queue.pop(x)
                        heapq.heapify(self.queue)
                    self._on_change()
                    return True
        return False

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        with self.mutex:
            if prompt_id is None:
                out: dict[str, Any] = {}
                if offset < 0 and max_items is not None:
                    offset = len(self.history) - max_items
                for i, (k, v) in enumerate(self.history.items()):
                    if i >= offset:
                        out[k] = v
                        if max_items is not None and len(out) >= max_items:
                            break
                return copy.deepcopy(out)
            if prompt_id in self.history:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])}
            return {}

    def wipe_history(self) -> None:
        with self.mutex:
            self.history = {}

    def delete_history_item(self, prompt_id: Any) -> None:
        with self.mutex:
            self.history.pop(prompt_id, None)

    def set_flag(self, name: str, value: Any) -> None:
        with self.mutex:
            self.flags[name] = value
            self.not_empty.notify()

    def take_flags(self) -> dict[str, Any]:
        with self.mutex:
            flags, self.flags = self.flags, {}
            return flags
