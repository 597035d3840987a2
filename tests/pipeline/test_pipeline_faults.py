"""Every fault knob of the test server, and the job still ends the way it should."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from comfyfleet.comfy import Client
from comfyfleet.errors import (
    ComfyConnectionLost,
    ComfyUnavailable,
    JobTimeout,
    NodeExecutionError,
)
from comfyfleet.execute import execute
from comfyfleet.jobs import JobSpec, Progress
from comfyfleet.outputs.inline import InlineSink

from .pipeline_helpers import slow, w1


async def test_websocket_drop_mid_run_is_survived(comfy, client, settings) -> None:
    await client.connect()
    comfy.faults.ws_drop_after = 4  # a few messages into the run
    result = await execute(JobSpec(workflow=slow(steps=6)), client, InlineSink(), settings=settings)
    assert comfy.faults.ws_drops == 1
    assert client.events.reconnects >= 1
    assert [a.kind for a in result.artifacts] == ["image"]


async def test_completion_during_the_gap_is_found_in_history(comfy, client, settings) -> None:
    await client.connect()
    # The socket is cut a few messages in and refused for 3 s; the prompt needs ~0.3 s more.
    comfy.faults.update(ws_drop_after=4, ws_refuse_seconds=3.0)
    progress: list[Progress] = []
    spec = JobSpec(workflow=slow(steps=6))
    result = await execute(spec, client, InlineSink(), progress.append, settings=settings)
    assert comfy.faults.ws_refusals >= 1, "the completion must have happened during the gap"
    assert comfy.faults.as_dict()["ws_refusing_for"] > 0, (
        "found by reconciling, not after the socket came back"
    )
    assert [a.kind for a in result.artifacts] == ["image"]
    assert result.artifacts[0].data


@pytest.mark.parametrize("knob", ["history_write_delay", "history_response_delay"])
async def test_delayed_history_is_waited_for(comfy, settings, knob) -> None:
    comfy.faults.update(**{knob: 0.4})
    async with Client(comfy.url, outputs_from_stream=False) as c:  # always read /history
        result = await execute(JobSpec(workflow=w1()), c, InlineSink(), settings=settings)
    assert len(result.artifacts) == 1 and result.artifacts[0].data


async def test_delayed_history_after_a_websocket_gap(comfy, client, settings) -> None:
    """After a drop only /history is trusted, even when it answers slowly."""
    await client.connect()
    comfy.faults.update(ws_drop_after=4, history_response_delay=0.3)
    result = await execute(JobSpec(workflow=slow(steps=4)), client, InlineSink(), settings=settings)
    assert comfy.faults.ws_drops == 1
    assert len(result.artifacts) == 1 and result.artifacts[0].data


async def test_failing_node_is_named(comfy, client, settings) -> None:
    comfy.faults.fail_classes = {"FleetTestSlow": "CUDA error: device-side assert triggered"}
    with pytest.raises(NodeExecutionError) as err:
        await execute(JobSpec(workflow=slow()), client, InlineSink(), settings=settings)
    assert err.value.message == (
        "node 2 (FleetTestSlow) failed: RuntimeError: CUDA error: device-side assert triggered"
    )
    assert err.value.details["node_id"] == "2"
    assert err.value.details["class_type"] == "FleetTestSlow"
    assert err.value.details["exception_type"] == "RuntimeError"


async def test_failing_test_node_reports_its_exception(comfy, client, settings) -> None:
    graph = w1()
    graph["3"] = {"class_type": "FleetTestFail", "inputs": {"image": ["1", 0], "message": "no"}}
    graph["2"]["inputs"]["images"] = ["3", 0]
    with pytest.raises(NodeExecutionError, match=r"node 3 \(FleetTestFail\) failed: .*no"):
        await execute(JobSpec(workflow=graph), client, InlineSink(), settings=settings)


async def other_clients_job(comfy, seconds: float, running: asyncio.Event | None = None) -> dict:
    """A prompt of someone else (another client id) on the same ComfyUI."""
    async with Client(comfy.url) as other:
        spec = JobSpec(workflow=slow(steps=4, seconds=seconds / 4))
        result = await execute(spec, other, InlineSink(), on_stage("running", running))
        return result.model_dump()


def on_stage(stage: str, event: asyncio.Event | None):
    def report(progress: Progress) -> None:
        if event is not None and progress.stage == stage:
            event.set()

    return report


async def test_deadline_interrupts_only_our_running_prompt(comfy, client, settings) -> None:
    running = asyncio.Event()
    spec = JobSpec(workflow=slow(steps=200), timeout=0.5)
    ours = asyncio.create_task(
        execute(spec, client, InlineSink(), on_stage("running", running), settings=settings)
    )
    await asyncio.wait_for(running.wait(), 5)
    theirs = asyncio.create_task(other_clients_job(comfy, 0.2))  # queued behind ours
    with pytest.raises(JobTimeout, match="ran past its deadline and was interrupted"):
        await ours
    result = await asyncio.wait_for(theirs, 10)
    assert result["artifacts"][0]["data"]


async def test_deadline_withdraws_our_pending_prompt(comfy, client, settings) -> None:
    running = asyncio.Event()
    theirs = asyncio.create_task(other_clients_job(comfy, 1.0, running))  # runs first
    await asyncio.wait_for(running.wait(), 5)
    spec = JobSpec(workflow=slow(steps=2), timeout=0.3)
    with pytest.raises(JobTimeout) as err:
        await execute(spec, client, InlineSink(), settings=settings)
    prompt_id = err.value.details["prompt_id"]
    running_items, pending = comfy.queue.get_current_queue()
    assert prompt_id not in {item[1] for item in running_items + pending}
    result = await asyncio.wait_for(theirs, 10)
    assert result["artifacts"][0]["data"]
    assert await client.history(prompt_id) is None  # it never ran


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_dead_comfy_is_unavailable_quickly(settings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with Client(url) as dead:
        start = time.monotonic()
        with pytest.raises(
            ComfyUnavailable,
            match=f"ComfyUI at {url} is unavailable \\(waited 1s\\): Cannot connect",
        ):
            await dead.wait_ready(timeout=1.0)
        with pytest.raises(ComfyUnavailable, match=f"ComfyUI at {url} is unavailable"):
            await execute(JobSpec(workflow=w1()), dead, InlineSink(), settings=settings)
        assert time.monotonic() - start < 5


async def test_comfy_dying_mid_run_is_reported_within_bounds(comfy, settings) -> None:
    # A reconnect timeout far beyond the wait below: the job can only end in time because a
    # closed socket and a refused port are taken as gone at once.
    async with Client(comfy.url, reconnect_timeout=600.0) as c:
        running = asyncio.Event()
        spec = JobSpec(workflow=slow(steps=100))
        job = asyncio.create_task(
            execute(spec, c, InlineSink(), on_stage("running", running), settings=settings)
        )
        await asyncio.wait_for(running.wait(), 5)
        await comfy.die()
        with pytest.raises(ComfyConnectionLost, match="connections are refused"):
            await asyncio.wait_for(job, 30)


async def test_restarted_comfy_loses_the_prompt(comfy, settings) -> None:
    async with Client(comfy.url, reconnect_timeout=5.0) as c:
        running = asyncio.Event()
        spec = JobSpec(workflow=slow(steps=100))
        job = asyncio.create_task(
            execute(spec, c, InlineSink(), on_stage("running", running), settings=settings)
        )
        await asyncio.wait_for(running.wait(), 5)
        await comfy.restart()  # queue and history are gone, as after a ComfyUI restart
        # Lost either way: refused while it was down, or found in neither queue nor history.
        lost = "connections are refused|in neither ComfyUI's queue nor its history"
        with pytest.raises(ComfyConnectionLost, match=lost):
            await asyncio.wait_for(job, 10)
