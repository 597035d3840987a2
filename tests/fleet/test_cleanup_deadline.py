"""A job past its deadline is interrupted and cleans up even when the event loop's timers fire
a little before ``time.monotonic()`` reaches the deadline -- as uvloop's millisecond timers do
under ``comfyfleet serve``. (It used to end in a bare TimeoutError: the prompt was left running
in ComfyUI and saved its output after the job's cleanup.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from comfyfleet.comfy.client import Client
from comfyfleet.errors import JobTimeout
from comfyfleet.execute import execute
from comfyfleet.jobs import JobSpec
from comfyfleet.outputs.inline import InlineSink
from comfyfleet.testing import ComfyTestServer

from .test_cleanup import files, graph, png


class EarlyTimers(asyncio.SelectorEventLoop):
    """A loop whose clock runs 5 ms ahead of ``time.monotonic()``: its timers fire early."""

    def time(self) -> float:
        return super().time() + 0.005


async def late_job(root: Path) -> tuple[BaseException | None, Any, list[str]]:
    async with ComfyTestServer(root=root, cache="none") as comfy, Client(comfy.url) as client:
        spec = JobSpec(
            workflow=graph(slow_steps=200),
            images=[{"name": "in.png", "image": png()}],
            timeout=0.3,
        )
        error: BaseException | None = None
        try:
            await execute(
                spec,
                client,
                InlineSink(),
                input_dir=comfy.input_dir,
                output_dir=comfy.output_dir,
            )
        except BaseException as exc:  # the test looks at what came out
            error = exc
        queue = comfy.queue_info()
        left = files(comfy.input_dir) + files(comfy.output_dir)
    return error, queue, left


def test_a_late_job_is_interrupted_and_cleaned_up_with_early_timers(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=EarlyTimers) as runner:
        error, queue, left = runner.run(late_job(tmp_path / "comfy"))
    assert isinstance(error, JobTimeout), repr(error)
    assert queue["exec_info"]["queue_remaining"] == 0  # our prompt was interrupted
    assert left == []
