"""What a job leaves behind (nothing, unless debug), what it reports, and every output kind."""

from __future__ import annotations

import asyncio

import pytest

from comfyfleet.errors import NodeExecutionError
from comfyfleet.execute import execute
from comfyfleet.jobs import InputImage, JobSpec, Progress
from comfyfleet.outputs.inline import InlineSink
from comfyfleet.outputs.local import LocalSink

from .pipeline_helpers import b64png, files_under, slow, w1, w2


def w2_spec(**kw) -> JobSpec:
    return JobSpec(workflow=w2(), images=[InputImage(name="in.png", image=b64png())], **kw)


async def test_nothing_of_the_job_remains(comfy, client, settings) -> None:
    dirs = {"input_dir": comfy.input_dir, "output_dir": comfy.output_dir}
    result = await execute(w2_spec(), client, InlineSink(), settings=settings, **dirs)
    assert result.artifacts[0].data
    assert list(comfy.input_dir.iterdir()) == []
    assert list(comfy.output_dir.iterdir()) == []
    assert await client.history(result.prompt_id) is None


async def test_http_upload_then_outputs_removed(comfy, client, settings) -> None:
    result = await execute(
        w2_spec(), client, InlineSink(), settings=settings, output_dir=comfy.output_dir
    )
    assert list(comfy.output_dir.iterdir()) == []
    assert await client.history(result.prompt_id) is None
    # ComfyUI has no delete API: without input_dir the uploaded input stays (under its own name).
    assert files_under(comfy.input_dir) == [f"{result.job_id}_0_in.png"]


async def test_debug_keeps_everything(comfy, client, settings) -> None:
    dirs = {"input_dir": comfy.input_dir, "output_dir": comfy.output_dir}
    result = await execute(w2_spec(debug=True), client, InlineSink(), settings=settings, **dirs)
    job = result.job_id
    assert files_under(comfy.input_dir) == [f"{job}_0_in.png"]
    assert files_under(comfy.output_dir) == [f"{job}/w2_00001_.png"]
    assert await client.history(result.prompt_id) is not None


async def test_cleanup_after_a_failure(comfy, client, settings) -> None:
    comfy.faults.fail_classes = {"ImageInvert": "out of ideas"}
    dirs = {"input_dir": comfy.input_dir, "output_dir": comfy.output_dir}
    spec = w2_spec()
    with pytest.raises(NodeExecutionError, match=r"node 2 \(ImageInvert\) failed"):
        await execute(spec, client, InlineSink(), settings=settings, **dirs)
    assert list(comfy.input_dir.iterdir()) == []
    assert comfy.queue.get_history() == {}


async def test_zero_fill_wipe(comfy, client) -> None:
    from comfyfleet.config import Settings

    dirs = {"input_dir": comfy.input_dir, "output_dir": comfy.output_dir}
    await execute(w2_spec(), client, InlineSink(), settings=Settings(wipe_zero_fill=True), **dirs)
    assert list(comfy.input_dir.iterdir()) == list(comfy.output_dir.iterdir()) == []


async def test_progress_reports_node_step_and_percent(client, settings) -> None:
    reports: list[Progress] = []
    await execute(JobSpec(workflow=slow(steps=3, seconds=0.01)), client, InlineSink(),
                  reports.append, settings=settings)  # fmt: skip
    stages = [r.stage for r in reports]
    assert stages[0] == "queued" and stages[-1] == "done"
    steps = [(r.node, r.class_type, r.value, r.max) for r in reports if r.max]
    assert steps == [("2", "FleetTestSlow", float(i), 3.0) for i in (1, 2, 3)]
    percents = [r.percent for r in reports if r.percent is not None]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert {r.job_id for r in reports} == {reports[0].job_id}


async def test_async_progress_callback(client, settings) -> None:
    seen: list[str] = []

    async def report(progress: Progress) -> None:
        seen.append(progress.stage)

    await execute(JobSpec(workflow=w1()), client, InlineSink(), report, settings=settings)
    assert seen[0] == "queued" and seen[-1] == "done"


async def test_cancelling_the_caller_stops_our_prompt(comfy, client, settings) -> None:
    running = asyncio.Event()

    def report(progress: Progress) -> None:
        if progress.stage == "running":
            running.set()

    job = asyncio.create_task(
        execute(JobSpec(workflow=slow(steps=500)), client, InlineSink(), report, settings=settings)
    )
    await asyncio.wait_for(running.wait(), 5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert comfy.queue.get_current_queue() == ([], [])
    assert comfy.queue.get_history() == {}


async def test_every_output_kind_with_local_sink(comfy, client, settings, tmp_path) -> None:
    graph = w1(size=16)
    graph["5"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 0},
    }
    graph["3"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {"images": ["5", 0], "filename_prefix": "anim", "fps": 6.0,
                   "lossless": True, "quality": 80, "method": "default"},
    }  # fmt: skip
    graph["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    out = tmp_path / "out"
    plain = await execute(JobSpec(workflow=graph), client, LocalSink(out), settings=settings)
    assert [(a.node_id, a.kind, a.type) for a in plain.artifacts] == [
        ("2", "image", "output"),
        ("3", "video", "output"),
    ]
    spec = JobSpec(workflow=graph, outputs={"include_temp": True})
    with_temp = await execute(spec, client, LocalSink(out), settings=settings)
    assert [a.type for a in with_temp.artifacts] == ["output", "output", "temp"]
    for artifact in with_temp.artifacts:
        assert artifact.path and artifact.size and (out / artifact.path).stat().st_size
    names = files_under(out)
    assert len(names) == 5 and "w1_00001_ (1).png" in names


async def test_names_only_without_data(client, settings) -> None:
    spec = JobSpec(workflow=w1(), outputs={"include_data": False})
    result = await execute(spec, client, InlineSink(), settings=settings)
    [art] = result.artifacts
    assert art.data is None and art.filename == "w1_00001_.png"


async def test_a_failing_progress_callback_does_not_fail_the_job(client, settings) -> None:
    def broken(_: Progress) -> None:
        raise ConnectionError("webhook down")

    result = await execute(JobSpec(workflow=slow(steps=2)), client, InlineSink(), broken,
                           settings=settings)  # fmt: skip
    assert result.artifacts[0].data


async def test_wrong_output_dir_falls_back_to_view(comfy, client, settings, tmp_path) -> None:
    elsewhere = tmp_path / "not-comfys-output"
    elsewhere.mkdir()
    result = await execute(JobSpec(workflow=w1()), client, InlineSink(), settings=settings,
                           output_dir=elsewhere)  # fmt: skip
    assert result.artifacts[0].data and result.artifacts[0].size
