"""Each fault knob, set through the HTTP control route (or Python) and observed by a plain
aiohttp client, the way the worker and gateway tests will see it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from comfyfleet.testing import ComfyTestServer

from .replay import WsRecorder

pytestmark = pytest.mark.timeout(60)


def w1(color: int = 0, prefix: str = "fault") -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def w_invert(color: int = 0) -> dict:
    prompt = w1(color)
    prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    return prompt


async def set_faults(session, server, **knobs) -> dict:
    async with session.post(server.url + "/_testing/faults", json=knobs) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def submit(session, server, prompt, client_id="fault-client") -> str:
    async with session.post(
        server.url + "/prompt", json={"prompt": prompt, "client_id": client_id}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body["prompt_id"]


async def history(session, server, prompt_id) -> dict:
    async with session.get(f"{server.url}/history/{prompt_id}") as resp:
        return await resp.json()


async def test_control_route_roundtrip(server, session):
    got = await set_faults(session, server, node_delay=0.25, fail_classes={"SaveImage": "x"})
    assert got["node_delay"] == 0.25 and got["fail_classes"] == {"SaveImage": "x"}
    assert server.faults.node_delay == 0.25  # the same object Python tests use
    async with session.post(server.url + "/_testing/faults", json={"no_such_knob": 1}) as resp:
        assert resp.status == 400
    async with session.delete(server.url + "/_testing/faults") as resp:
        assert (await resp.json())["node_delay"] == 0.0
    async with session.get(server.url + "/_testing/faults") as resp:
        assert (await resp.json())["fail_classes"] == {}


async def test_ws_drop_after_n_messages(server, session):
    await set_faults(session, server, ws_drop_after=4)
    ws = await session.ws_connect(server.ws_url + "?clientId=fault-client")
    pid = await submit(session, server, w1(1))
    received = []
    async for msg in ws:
        received.append(msg.json())
    assert len(received) == 4  # status(sid), status(queued), status(taken), execution_start
    assert ws.closed
    # the prompt still finishes; a reconnecting client recovers it from /history
    ws2 = await session.ws_connect(server.ws_url + "?clientId=fault-client")
    for _ in range(100):
        if await history(session, server, pid):
            break
        await asyncio.sleep(0.02)
    assert (await history(session, server, pid))[pid]["status"]["status_str"] == "success"
    state = server.faults.as_dict()
    assert state["fired"]["ws_drops"] == 1 and state["ws_drop_after"] is None  # one-shot
    await ws2.close()


async def test_ws_drop_every_connection(server, session):
    server.faults.update(ws_drop_after=1, ws_drop_times=0)
    for _ in range(3):
        ws = await session.ws_connect(server.ws_url)
        msgs = [m async for m in ws]
        assert len(msgs) == 1
    assert server.faults.ws_drops == 3


async def test_ws_refuse_reconnects(server, session):
    await set_faults(session, server, ws_refuse_for=0.4)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(server.ws_url)
    assert err.value.status == 503
    async with session.get(server.url + "/prompt") as resp:  # HTTP keeps working
        assert resp.status == 200
    await asyncio.sleep(0.45)
    ws = await session.ws_connect(server.ws_url)
    assert (await ws.receive_json())["type"] == "status"
    await ws.close()


async def test_ws_refuse_after_drop(server, session):
    await set_faults(session, server, ws_drop_after=1, ws_refuse_seconds=0.4)
    ws = await session.ws_connect(server.ws_url + "?clientId=c")
    assert [m async for m in ws]  # got its one message, then cut
    t0 = time.monotonic()
    refused = 0
    while True:
        try:
            ws = await session.ws_connect(server.ws_url + "?clientId=c")
            break
        except aiohttp.WSServerHandshakeError as e:
            assert e.status == 503
            refused += 1
            await asyncio.sleep(0.05)
    assert refused >= 2 and time.monotonic() - t0 >= 0.3
    await ws.close()


async def test_history_write_delay(server, session):
    await set_faults(session, server, history_write_delay=0.4)
    ws = await WsRecorder(session, server.ws_url).connect("fault-client")
    mark = ws.mark()
    pid = await submit(session, server, w1(2))
    i = await ws.wait_for(lambda m: m["type"] == "execution_success", mark)
    t_success = time.monotonic()
    assert await history(session, server, pid) == {}  # the race, made deterministic
    end = await ws.wait_done(pid, i)
    assert time.monotonic() - t_success >= 0.3
    assert [m["type"] for m in ws.messages[i : end + 1]] == [
        "execution_success",
        "status",
        "executing",
    ]
    assert pid in await history(session, server, pid)  # present once executing null arrived
    await ws.close()


async def test_history_response_delay(server, session):
    await set_faults(session, server, history_response_delay=0.5)
    t0 = time.monotonic()
    assert await history(session, server, "nope") == {}
    async with session.get(server.url + "/api/history?max_items=1") as resp:
        assert await resp.json() == {}
    assert time.monotonic() - t0 >= 0.95
    # Other routes are not delayed: /queue answers while a delayed /history is still pending.
    server.faults.history_response_delay = 3.0
    pending = asyncio.create_task(history(session, server, "nope"))
    async with session.get(server.url + "/queue") as resp:
        assert resp.status == 200
    assert not pending.done()
    assert await pending == {}


async def test_fail_class_and_node(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("fault-client")
    await set_faults(session, server, fail_classes={"ImageInvert": "boom on purpose"})
    for _ in range(2):  # a failed node is not cached: it fails again
        mark = ws.mark()
        pid = await submit(session, server, w_invert(3))
        end = await ws.wait_done(pid, mark)
        err = next(m for m in ws.messages[mark:end] if m["type"] == "execution_error")["data"]
        assert (err["node_id"], err["node_type"]) == ("3", "ImageInvert")
        assert (err["exception_type"], err["exception_message"]) == (
            "RuntimeError",
            "boom on purpose\n",
        )
        assert not any(m["type"] == "execution_success" for m in ws.messages[mark:end])
        entry = (await history(session, server, pid))[pid]
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}

    await set_faults(
        session,
        server,
        fail_classes=None,
        fail_nodes={"2": "disk full"},
        fail_exception_type="torch.OutOfMemoryError",
    )
    mark = ws.mark()
    pid = await submit(session, server, w_invert(3))
    end = await ws.wait_done(pid, mark)
    err = next(m for m in ws.messages[mark:end] if m["type"] == "execution_error")["data"]
    assert err["node_id"] == "2" and err["exception_type"] == "torch.OutOfMemoryError"
    assert err["exception_message"].startswith("disk full\nThis error means you ran out of memory")
    assert err["executed"] == ["3"]  # node 1 came from the cache; node 3 ran this time

    await set_faults(session, server, fail_nodes=None)
    mark = ws.mark()
    pid = await submit(session, server, w_invert(3))
    await ws.wait_done(pid, mark)
    assert (await history(session, server, pid))[pid]["status"]["status_str"] == "success"
    assert server.faults.failures_injected == 3
    await ws.close()


async def test_node_delay(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("fault-client")
    server.faults.node_delay = 0.3
    mark = ws.mark()
    t0 = time.monotonic()
    pid = await submit(session, server, w_invert(4))  # three nodes execute
    await ws.wait_done(pid, mark)
    assert time.monotonic() - t0 >= 0.9
    assert server.faults.nodes_delayed == 3
    server.faults.update(node_delay_classes=["ImageInvert"])
    mark = ws.mark()
    t0 = time.monotonic()
    pid = await submit(session, server, w_invert(5))
    await ws.wait_done(pid, mark)
    assert time.monotonic() - t0 >= 0.3
    assert server.faults.nodes_delayed == 4  # only the ImageInvert node waited
    await ws.close()


async def test_node_delay_interrupt_takes_effect_at_next_node(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("fault-client")
    server.faults.update(node_delay=0.3, node_delay_classes=["EmptyImage"])
    mark = ws.mark()
    pid = await submit(session, server, w_invert(6))
    await ws.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "1", mark)
    async with session.post(server.url + "/interrupt", json={"prompt_id": pid}) as resp:
        assert resp.status == 200
    end = await ws.wait_done(pid, mark)
    tail = [
        (m["type"], m["data"].get("node", m["data"].get("node_id")))
        for m in ws.messages[mark : end + 1]
    ][-5:]
    assert tail == [
        ("progress_state", None),
        ("executing", "3"),
        ("execution_interrupted", "3"),
        ("status", None),
        ("executing", None),
    ]
    await ws.close()


async def test_job_seconds(tmp_path, session):
    async with ComfyTestServer(root=tmp_path, cache="none") as server:
        await set_faults(session, server, job_seconds=0.3)
        ws = await WsRecorder(session, server.ws_url).connect("fault-client")
        for _ in range(2):  # the same workflow twice: with cache "none" both run every node
            mark = ws.mark()
            pid = await submit(session, server, w1(7))
            s = await ws.wait_for(lambda m: m["type"] == "execution_start", mark)
            t0 = time.monotonic()
            end = await ws.wait_done(pid, s)
            assert time.monotonic() - t0 >= 0.25
            cached = next(m for m in ws.messages[mark:end] if m["type"] == "execution_cached")
            assert cached["data"]["nodes"] == []
        # interruptible within the padding, like sampler steps
        server.faults.job_seconds = 600.0  # only an interrupt ends it within wait_done's 20 s
        mark = ws.mark()
        pid = await submit(session, server, w1(8))
        await ws.wait_for(lambda m: m["type"] == "executing", mark)
        async with session.post(server.url + "/interrupt", json={}) as resp:
            assert resp.status == 200
        end = await ws.wait_done(pid, mark)
        assert any(m["type"] == "execution_interrupted" for m in ws.messages[mark:end])
        await ws.close()


async def test_job_seconds_fully_cached(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("fault-client")
    mark = ws.mark()
    await ws.wait_done(await submit(session, server, w1(9)), mark)
    server.faults.job_seconds = 0.3
    mark = ws.mark()
    t0 = time.monotonic()
    pid = await submit(session, server, w1(9))
    end = await ws.wait_done(pid, mark)
    assert time.monotonic() - t0 >= 0.25
    assert next(m for m in ws.messages[mark:end] if m["type"] == "execution_cached")["data"][
        "nodes"
    ] == ["1", "2"]
    await ws.close()


async def test_freeze(server, session):
    await set_faults(session, server, freeze=True)
    with pytest.raises(TimeoutError):
        async with session.get(server.url + "/prompt", timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    await set_faults(session, server, freeze=False)  # the control route is never frozen
    async with session.get(server.url + "/prompt") as resp:
        assert resp.status == 200


async def test_die_in_process_and_restart(server, session):
    ws = await session.ws_connect(server.ws_url)
    await ws.receive_json()
    port = server.port
    await submit(session, server, w1(10))
    async with session.post(server.url + "/_testing/die") as resp:
        assert resp.status == 200
    msg = await ws.receive(timeout=5)
    while msg.type == aiohttp.WSMsgType.TEXT:  # (status broadcasts of the prompt)
        msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    for _ in range(100):
        if server.dead:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh, fresh.get(server.url + "/system_stats"):
            pass
    await server.restart()  # like a restarted ComfyUI: same port and folders, empty queue/history
    assert server.port == port
    async with session.get(server.url + "/history") as resp:
        assert await resp.json() == {}
    pid = await submit(session, server, w1(11))
    assert pid


def test_die_subprocess(tmp_path):
    with ComfyTestServer.start_subprocess(root=tmp_path) as proc:
        proc.set_faults(node_delay=0.01)
        assert proc.get_faults()["node_delay"] == 0.01
        assert proc.die() == 86
