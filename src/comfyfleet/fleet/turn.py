"""One task's hold on a backend slot, as its runner sees it.

A local backend has ``1 + depth`` slots: one for the prompt ComfyUI runs and ``depth`` for
prompts already uploaded and waiting in ComfyUI's own queue (pipelined dispatch), so ComfyUI
starts the next prompt the moment one ends instead of waiting for the gateway to claim, prepare
and submit it. A task holds its slot only until its prompt is done in ComfyUI; delivering the
outputs and reporting need no GPU, so the runner calls ``prompt_done()`` and the agent claims
the next task at once.

The runner also says how far the prompt got (``queued`` in ComfyUI, ``started`` there): a task
whose prompt was still waiting in ComfyUI's queue when that ComfyUI died never ran, so it goes
back to the queue without spending an attempt.
"""

from __future__ import annotations

import asyncio

from comfyfleet.fleet.backend import Backend


class Turn:
    """A task's slot on its backend and how far its prompt got there."""

    def __init__(self, backend: Backend, task_id: str, freed: asyncio.Event) -> None:
        self.backend = backend
        self.task_id = task_id
        self.freed = freed
        self.queued = False  # our prompt is in ComfyUI's queue (POST /prompt answered)
        self.started = False  # ComfyUI began executing it (execution_start seen)

    @property
    def waiting(self) -> bool:
        """Queued in ComfyUI but not started: the prompt has not run at all."""
        return self.queued and not self.started

    def release(self) -> None:
        """The slot is free for the next task (idempotent)."""
        if not self.freed.is_set():
            self.backend.release(self.task_id)
            self.freed.set()

    def prompt_submitted(self) -> None:
        self.queued = True

    def prompt_done(self) -> None:
        """Our prompt ended in ComfyUI; only our delivery remains."""
        self.started = True
        self.release()
