"""Warm-up: pending -> warming -> ready/failed, against a fake ComfyUI on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyfleet.runtime.warmup import WarmupState, load_workflow, warm_up

GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


async def test_no_workflow_is_ready_at_once(fake_comfy) -> None:
    state = await warm_up(WarmupState(), fake_comfy.url, None)
    assert state.ready and fake_comfy.prompts == []


async def test_runs_once_after_comfy_is_ready(fake_comfy, tmp_path: Path) -> None:
    fake_comfy.unready = 3  # still starting for three probes
    fake_comfy.history_polls_before_done = 2  # history is {} twice, like the real race
    wf = tmp_path / "warmup.json"
    wf.write_text(json.dumps(GRAPH))
    state = WarmupState()
    assert state.to_dict()["status"] == "pending"
    result = await warm_up(state, fake_comfy.url, wf)
    assert result is state and state.status == "ready" and state.reason is None
    assert len(fake_comfy.prompts) == 1 and fake_comfy.prompts[0]["prompt"] == GRAPH
    assert fake_comfy.unready == 0
    assert await state.wait() == "ready"


async def test_node_failure_is_reported(fake_comfy) -> None:
    fake_comfy.outcome = "error"
    state = await warm_up(WarmupState(), fake_comfy.url, GRAPH)
    assert state.status == "failed"
    assert state.reason == "node 2 (ImageToMask): index 3 is out of bounds"


async def test_rejection_is_reported(fake_comfy) -> None:
    fake_comfy.outcome = "reject"
    state = await warm_up(WarmupState(), fake_comfy.url, GRAPH)
    assert state.status == "failed"
    assert state.reason.startswith("Prompt outputs failed validation; node 1 (EmptyImage)")


async def test_unreachable_comfy_times_out_as_failed(unused_tcp_port: int) -> None:
    state = await warm_up(WarmupState(), f"http://127.0.0.1:{unused_tcp_port}", GRAPH, timeout=0.3)
    assert state.status == "failed" and "within 0.3s" in state.reason


async def test_state_is_warming_while_running(fake_comfy) -> None:
    seen: list[str] = []
    state = WarmupState()
    orig_start = state.start

    def start() -> None:
        orig_start()
        seen.append(state.status)

    state.start = start  # type: ignore[method-assign]
    await warm_up(state, fake_comfy.url, GRAPH)
    assert seen == ["warming"] and state.status == "ready"


@pytest.mark.parametrize("bad", [{}, {"nodes": [], "links": []}, ["x"]])
def test_ui_exports_and_junk_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="API-format"):
        load_workflow(bad)  # type: ignore[arg-type]


def test_wrapped_prompt_is_accepted() -> None:
    assert load_workflow({"prompt": GRAPH}) == GRAPH


async def test_bad_file_fails_the_state(fake_comfy, tmp_path: Path) -> None:
    wf = tmp_path / "ui.json"
    wf.write_text(json.dumps({"nodes": [], "links": []}))
    state = await warm_up(WarmupState(), fake_comfy.url, wf)
    assert state.status == "failed" and "API-format" in state.reason
