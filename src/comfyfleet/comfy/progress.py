"""Turn a prompt's websocket events into `Progress` reports: current node, its step, and an
overall percentage (finished nodes plus the running node's fraction, over the nodes to run)."""

from __future__ import annotations

from comfyfleet.comfy.messages import Event
from comfyfleet.jobs import Progress


class ProgressTracker:
    __slots__ = ("_cached", "_classes", "_finished", "_node", "job_id", "prompt_id")

    def __init__(self, job_id: str, prompt_id: str, classes: dict[str, str]) -> None:
        self.job_id = job_id
        self.prompt_id = prompt_id
        self._classes = classes
        self._cached = 0
        self._finished = 0
        self._node: str | None = None

    def update(self, event: Event) -> Progress | None:
        """Fold in one event; return a report when there is something new to show."""
        kind, data = event.type, event.data
        if kind == "progress_state":
            nodes = data.get("nodes") or {}
            self._finished = sum(
                1 for n in nodes.values() if isinstance(n, dict) and n.get("state") == "finished"
            )
        elif kind == "execution_cached":
            self._cached = len(data.get("nodes") or [])
        elif kind == "execution_start":
            return Progress(
                job_id=self.job_id, prompt_id=self.prompt_id, stage="running", percent=0.0
            )
        elif kind == "executing" and data.get("node") is not None:
            self._node = str(data["node"])
            return self._report(None, None)
        elif kind == "progress":
            self._node = str(data.get("node", self._node))
            return self._report(data.get("value"), data.get("max"))
        return None

    def _report(self, value: float | None, maximum: float | None) -> Progress:
        fraction = value / maximum if value is not None and maximum else 0.0
        todo = max(len(self._classes) - self._cached, 1)
        percent = min(100.0, 100.0 * (self._finished + fraction) / todo)
        return Progress(
            job_id=self.job_id,
            prompt_id=self.prompt_id,
            stage="running",
            node=self._node,
            class_type=self._classes.get(self._node or ""),
            value=value,
            max=maximum,
            percent=round(percent, 1),
        )
