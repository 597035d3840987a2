"""comfy.Client's own API against the test server."""

from __future__ import annotations

import time

import pytest

from comfyfleet.comfy import Client
from comfyfleet.errors import ComfyError, ComfyRejected, WorkflowValidationError

from .pipeline_helpers import png, w1


async def test_basics(comfy, client) -> None:
    stats = await client.system_stats()
    assert stats["system"]["comfyui_version"]
    info = await client.object_info()
    assert "SaveImage" in info
    assert await client.object_info() is info  # cached per client
    assert await client.queue() == {"queue_running": [], "queue_pending": []}
    await client.free()


async def test_history_is_deleted_in_batches_and_the_rest_on_close(comfy) -> None:
    async with Client(comfy.url, history_batch=3) as batched:
        ids = []
        for color in (1, 2, 3, 4):
            prompt_id = await batched.submit(w1(color=color))
            await batched.wait(prompt_id, deadline=time.monotonic() + 10)
            await batched.delete_history([prompt_id])
            ids.append(prompt_id)
            if color == 2:  # not yet a batch: still there
                assert set(comfy.queue.get_history()) == set(ids)
        assert set(comfy.queue.get_history()) == {ids[3]}  # one batch of three went
    assert comfy.queue.get_history() == {}  # the rest on close


async def test_upload_renames_unless_overwritten(comfy, client) -> None:
    first = await client.upload("x.png", png(color=(1, 1, 1)), overwrite=False)
    same = await client.upload("x.png", png(color=(1, 1, 1)), overwrite=False)
    other = await client.upload("x.png", png(color=(2, 2, 2)), overwrite=False)
    assert (first["name"], same["name"], other["name"]) == ("x.png", "x.png", "x (1).png")
    replaced = await client.upload("x.png", png(color=(3, 3, 3)), subfolder="sub")
    assert replaced == {"name": "x.png", "subfolder": "sub", "type": "input"}


async def test_submit_wait_view_and_forget(comfy, client) -> None:
    prompt_id = await client.submit(w1(color=0xFF0000), prompt_id="my-own-id")
    assert prompt_id == "my-own-id"
    entry = await client.wait(prompt_id, deadline=time.monotonic() + 10)
    [image] = entry.outputs["2"]["images"]
    data = b"".join([c async for c in client.view(image["filename"], image["subfolder"])])
    assert data.startswith(b"\x89PNG")
    assert await client.history(prompt_id) is not None
    await client.delete_history([prompt_id])
    assert await client.history(prompt_id) is None


async def test_missing_file_in_view(client) -> None:
    with pytest.raises(ComfyError, match=r"ComfyUI has no output file nope.png \(HTTP 404\)"):
        async for _ in client.view("nope.png"):
            pass


async def test_waiting_on_a_prompt_of_another_client(comfy, client) -> None:
    """E.g. an agent that restarted: its old prompt's messages go to a socket that is gone."""
    async with Client(comfy.url) as other:
        prompt_id = await other.submit(w1())
        entry = await client.wait(prompt_id, deadline=time.monotonic() + 10)
        await other.wait(prompt_id, deadline=time.monotonic() + 10)
    assert entry.outputs["2"]["images"]


async def test_history_path_gives_the_same_outputs(comfy) -> None:
    graph = w1(color=0x123456)
    async with Client(comfy.url) as streamed, Client(comfy.url, outputs_from_stream=False) as read:
        a = await streamed.wait(await streamed.submit(graph), time.monotonic() + 10)
        b = await read.wait(await read.submit(graph), time.monotonic() + 10)  # cached re-run
    assert a.outputs == b.outputs


async def test_partly_valid_prompt_is_withdrawn(comfy, client) -> None:
    graph = w1()
    bad = w1()
    bad["1"]["inputs"]["width"] = -1
    graph.update({"3": bad["1"], "4": {**bad["2"], "inputs": {**bad["2"]["inputs"]}}})
    graph["4"]["inputs"]["images"] = ["3", 0]
    with pytest.raises(WorkflowValidationError, match=r"node 3 \(EmptyImage\) input 'width'"):
        await client.submit(graph)
    assert comfy.queue.get_current_queue()[1] == []


async def test_prompt_without_outputs_is_rejected(client) -> None:
    graph = w1()
    del graph["2"]
    with pytest.raises(ComfyRejected, match="ComfyUI rejected the prompt: Prompt has no outputs"):
        await client.submit(graph)
