"""Behaviour of the test server beyond the replayed recordings: pixels, nodes, files, routing,
queue semantics, runners and the command line."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import urllib.request

import aiohttp
import numpy as np
import pytest
from PIL import Image

from comfyfleet.testing import ComfyTestServer, imageops

from .replay import WsRecorder

pytestmark = pytest.mark.timeout(60)


def png(color, size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


async def upload(session, server, name, data, **fields):
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for k, v in fields.items():
        form.add_field(k, v)
    async with session.post(server.url + "/upload/image", data=form) as resp:
        return resp.status, (await resp.json() if resp.status == 200 else await resp.text())


async def run(session, server, ws, prompt, client_id="t", **body):
    mark = ws.mark()
    async with session.post(
        server.url + "/prompt", json={"prompt": prompt, "client_id": client_id, **body}
    ) as resp:
        data = await resp.json()
        assert resp.status == 200, data
    pid = data["prompt_id"]
    end = await ws.wait_done(pid, mark)
    async with session.get(f"{server.url}/history/{pid}") as resp:
        entry = (await resp.json())[pid]
    return entry, ws.messages[mark : end + 1]


async def view(session, server, **query):
    async with session.get(server.url + "/view", params=query) as resp:
        return resp.status, resp.headers.get("Content-Type"), await resp.read()


def save(images, prefix="t"):
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}


# -- pixels ----------------------------------------------------------------------------------


async def test_pixel_arithmetic_load_invert_save(server, session):
    """(10, 200, 30) -> LoadImage -> ImageInvert -> SaveImage is (245, 54, 225), as on the real
    server (float32 in [0, 1], then clip(255 * x) truncated to uint8)."""
    ws = await WsRecorder(session, server.ws_url).connect("t")
    status, body = await upload(session, server, "src.png", png((10, 200, 30)))
    assert status == 200
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": body["name"]}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": save(["2", 0], "pixels"),
        },
    )
    image = entry["outputs"]["3"]["images"][0]
    status, ctype, data = await view(session, server, **image)
    assert (status, ctype) == (200, "image/png")
    img = Image.open(io.BytesIO(data))
    assert img.size == (64, 48)
    assert np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0).tolist() == [
        [245, 54, 225]
    ]
    meta = json.loads(img.info["prompt"])  # SaveImage embeds the prompt, like ComfyUI
    assert meta["3"]["class_type"] == "SaveImage"
    await ws.close()


def test_to_uint8_truncates_like_comfyui():
    x = np.asarray([[[[10, 200, 30]]]], dtype=np.float32) / np.float32(255.0)
    assert imageops.to_uint8(np.float32(1.0) - x).tolist() == [[[[245, 54, 225]]]]


def test_resize_matches_torch_semantics():
    img = np.asarray([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)[None, :, :, None]
    bilinear = imageops.common_upscale(img, 4, 4, "bilinear", "disabled")[0, :, :, 0]
    assert bilinear[0].tolist() == [0.0, 0.25, 0.75, 1.0]  # torch, align_corners=False
    assert bilinear[:, 0].tolist() == [0.0, 0.5, 1.5, 2.0]
    nearest = imageops.common_upscale(img, 3, 3, "nearest-exact", "disabled")[0, :, :, 0]
    assert nearest.tolist() == [[0, 1, 1], [2, 3, 3], [2, 3, 3]]
    area = imageops.common_upscale(img, 1, 1, "area", "disabled")[0, :, :, 0]
    assert area.tolist() == [[1.5]]
    bicubic = imageops.common_upscale(img, 2, 2, "bicubic", "disabled")
    assert np.allclose(bicubic[0, :, :, 0], img[0, :, :, 0])  # same size: unchanged


async def test_image_scale_and_mask_nodes(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 40, "height": 20, "batch_size": 2, "color": 0xFF8000},
            },
            "2": {
                "class_type": "ImageScale",
                "inputs": {
                    "image": ["1", 0],
                    "upscale_method": "bilinear",
                    "width": 0,
                    "height": 10,
                    "crop": "disabled",
                },
            },
            "3": {
                "class_type": "ImageScaleBy",
                "inputs": {"image": ["2", 0], "upscale_method": "lanczos", "scale_by": 1.5},
            },
            "4": {"class_type": "ImageToMask", "inputs": {"image": ["3", 0], "channel": "green"}},
            "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
            "6": save(["5", 0], "masks"),
        },
    )
    images = entry["outputs"]["6"]["images"]
    assert [i["filename"] for i in images] == ["masks_00001_.png", "masks_00002_.png"]
    _, _, data = await view(session, server, **images[1])
    img = Image.open(io.BytesIO(data)).convert("RGB")
    assert img.size == (30, 15)
    assert np.unique(np.asarray(img).reshape(-1, 3), axis=0).tolist() == [
        [128, 128, 128]
    ]  # green 0x80
    await ws.close()


# -- output nodes ----------------------------------------------------------------------------


async def test_save_image_subfolder_prefix_and_counter(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    empty = {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 1},
    }
    entry, _ = await run(session, server, ws, {"1": empty, "2": save(["1", 0], "job123/ComfyUI")})
    assert entry["outputs"]["2"]["images"] == [
        {"filename": "ComfyUI_00001_.png", "subfolder": "job123", "type": "output"},
        {"filename": "ComfyUI_00002_.png", "subfolder": "job123", "type": "output"},
    ]
    assert (server.output_dir / "job123" / "ComfyUI_00002_.png").is_file()
    empty["inputs"]["color"] = 2
    entry, _ = await run(session, server, ws, {"1": empty, "2": save(["1", 0], "job123/ComfyUI")})
    assert entry["outputs"]["2"]["images"][0]["filename"] == "ComfyUI_00003_.png"
    status, _, _ = await view(
        session, server, filename="ComfyUI_00003_.png", subfolder="job123", type="output"
    )
    assert status == 200
    # saving outside the output folder is an execution error, as in ComfyUI
    empty["inputs"]["color"] = 3
    entry, msgs = await run(session, server, ws, {"1": empty, "2": save(["1", 0], "../escape/x")})
    err = next(m for m in msgs if m["type"] == "execution_error")["data"]
    assert "Saving image outside the output folder is not allowed" in err["exception_message"]
    await ws.close()


async def test_preview_image_is_temp(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5},
            },
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        },
    )
    (image,) = entry["outputs"]["2"]["images"]
    assert image["type"] == "temp" and image["subfolder"] == ""
    assert image["filename"].startswith("ComfyUI_temp_") and image["filename"].endswith(
        "_00001_.png"
    )
    status, ctype, _ = await view(session, server, **image)
    assert (status, ctype) == (200, "image/png")
    await ws.close()


async def test_animated_outputs(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    server.add_input("anim.png", buf.getvalue())  # LoadImage turns the frames into a batch
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "anim.png"}},
            "2": {
                "class_type": "SaveAnimatedWEBP",
                "inputs": {
                    "images": ["1", 0],
                    "filename_prefix": "anim",
                    "fps": 6.0,
                    "lossless": True,
                    "quality": 80,
                    "method": "default",
                },
            },
            "3": {
                "class_type": "SaveAnimatedPNG",
                "inputs": {
                    "images": ["1", 0],
                    "filename_prefix": "apng",
                    "fps": 6.0,
                    "compress_level": 4,
                },
            },
        },
    )
    assert entry["outputs"]["2"] == {
        "images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}],
        "animated": [True],
    }
    assert entry["outputs"]["3"]["images"][0]["filename"] == "apng_00001_.png"
    status, ctype, data = await view(session, server, filename="anim_00001_.webp", type="output")
    assert (status, ctype) == (200, "image/webp")
    webp = Image.open(io.BytesIO(data))
    assert getattr(webp, "n_frames", 1) == 3
    with Image.open(server.output_dir / "apng_00001_.png") as apng:
        assert apng.n_frames == 3
    await ws.close()


async def test_single_frame_animation_is_not_marked_animated(server, session):
    """ComfyUI 0.8.0's SaveAnimatedWEBP/PNG are V3 nodes (object_info: module
    ``comfy_extras.nodes_images``, ``output_matchtypes``), answering through
    ``comfy_api.latest._ui.SavedImages(..., is_animated=len(images) > 1)``, whose ``as_dict``
    adds ``"animated": (True,)`` only when animated: one frame has no ``animated`` key at all.
    (The ``[false]`` some clients expect is what the pre-V3 nodes returned.)"""
    ws = await WsRecorder(session, server.ws_url).connect("t")
    size = {"width": 8, "height": 8, "batch_size": 1, "color": 0}
    one = {"class_type": "EmptyImage", "inputs": size}
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": one,
            "2": {
                "class_type": "SaveAnimatedWEBP",
                "inputs": {
                    "images": ["1", 0],
                    "filename_prefix": "single",
                    "fps": 6.0,
                    "lossless": True,
                    "quality": 80,
                    "method": "default",
                },
            },
            "3": {
                "class_type": "SaveAnimatedPNG",
                "inputs": {
                    "images": ["1", 0],
                    "filename_prefix": "single_apng",
                    "fps": 6.0,
                    "compress_level": 4,
                },
            },
        },
    )
    assert entry["outputs"]["2"] == {
        "images": [{"filename": "single_00001_.webp", "subfolder": "", "type": "output"}]
    }
    assert entry["outputs"]["3"] == {
        "images": [{"filename": "single_apng_00001_.png", "subfolder": "", "type": "output"}]
    }
    await ws.close()


async def test_unimplemented_class_fails_when_executed(server, session):
    server.add_model("checkpoints", "model.safetensors")
    async with session.get(server.url + "/models/checkpoints") as resp:
        assert await resp.json() == ["model.safetensors"]
    async with session.get(server.url + "/object_info/CheckpointLoaderSimple") as resp:
        info = await resp.json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "model.safetensors"
    ]
    ws = await WsRecorder(session, server.ws_url).connect("t")
    entry, msgs = await run(
        session,
        server,
        ws,
        {
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "model.safetensors"},
            },
            "5": {
                "class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1},
            },
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
            "9": save(["8", 0]),
        },
    )
    err = next(m for m in msgs if m["type"] == "execution_error")["data"]
    assert err["exception_type"] == "NotImplementedError"
    assert err["node_type"] in err["exception_message"]
    assert "not implemented by the comfyfleet test server" in err["exception_message"]
    assert entry["status"]["status_str"] == "error"
    await ws.close()


# -- validation against live folders ---------------------------------------------------------


async def test_loadimage_lists_and_validates_against_input_folder(server, session):
    server.add_input("top.png", Image.new("RGB", (4, 4)))
    server.add_input("sub/inner.png", Image.new("RGB", (4, 4)))
    server.add_input("notes.txt", b"x")
    async with session.get(server.url + "/object_info/LoadImage") as resp:
        listed = (await resp.json())["LoadImage"]["input"]["required"]["image"][0]
    assert listed == ["top.png"]  # top-level image files only, as ComfyUI lists them
    ws = await WsRecorder(session, server.ws_url).connect("t")
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "sub/inner.png"}},
            "2": save(["1", 0]),
        },
    )
    assert entry["status"]["status_str"] == "success"
    server.add_input("late.png", Image.new("RGB", (4, 4)))  # re-listed at every validation
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "late.png"}},
            "2": save(["1", 0]),
        },
    )
    assert entry["status"]["status_str"] == "success"
    await ws.close()


async def test_converted_values_are_stored(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": "16", "height": 16.9, "batch_size": 1, "color": 0},
            },
            "2": save(["1", 0]),
        },
    )
    assert entry["prompt"][2]["1"]["inputs"]["width"] == 16
    assert entry["prompt"][2]["1"]["inputs"]["height"] == 16
    await ws.close()


# -- routing, queue, history -----------------------------------------------------------------


async def test_history_present_at_executing_null(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    for i in range(20):
        entry, msgs = await run(
            session,
            server,
            ws,
            {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": i},
                },
                "2": save(["1", 0]),
            },
        )
        assert entry["status"]["completed"] is True
        assert [m["type"] for m in msgs[-3:]] == ["execution_success", "status", "executing"]
    await ws.close()


async def test_prompts_run_serially_in_number_order(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    server.faults.node_delay = 0.02
    prompts = [
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 30000 + i},
            },
            "2": save(["1", 0], "conc"),
        }
        for i in range(10)
    ]

    async def post(p):
        async with session.post(
            server.url + "/prompt", json={"prompt": p, "client_id": "t"}
        ) as resp:
            return await resp.json()

    mark = ws.mark()
    bodies = await asyncio.gather(*(post(p) for p in prompts))
    by_number = [b["prompt_id"] for b in sorted(bodies, key=lambda b: b["number"])]
    await asyncio.gather(*(ws.wait_done(b["prompt_id"], mark) for b in bodies))
    events = [
        (m["type"], m["data"]["prompt_id"])
        for m in ws.messages[mark:]
        if m["type"] in ("execution_start", "execution_success")
    ]
    assert events == [
        (t, pid) for pid in by_number for t in ("execution_start", "execution_success")
    ]
    await ws.close()


async def test_front_and_explicit_number_order(server, session):
    server.faults.update(node_delay=0.3, node_delay_classes=["FleetTestSlow"])
    ws = await WsRecorder(session, server.ws_url).connect("t")

    def prompt(c):
        return {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": c},
            },
            "2": save(["1", 0]),
        }

    slow = prompt(1)
    slow["3"] = {
        "class_type": "FleetTestSlow",
        "inputs": {"image": ["1", 0], "steps": 1, "seconds_per_step": 0.0},
    }
    slow["2"]["inputs"]["images"] = ["3", 0]
    mark = ws.mark()
    ids = []
    for body in (
        {"prompt": slow},
        {"prompt": prompt(2)},
        {"prompt": prompt(3), "number": 1.5},
        {"prompt": prompt(4), "front": True},
    ):
        async with session.post(server.url + "/prompt", json={**body, "client_id": "t"}) as resp:
            ids.append((await resp.json())["prompt_id"])
        if len(ids) == 1:
            await ws.wait_for(lambda m: m["type"] == "execution_start", mark)
    for pid in ids:
        await ws.wait_done(pid, mark)
    starts = [m["data"]["prompt_id"] for m in ws.messages[mark:] if m["type"] == "execution_start"]
    assert starts == [ids[0], ids[3], ids[1], ids[2]]  # numbers 0, then -2 < 1 < 1.5
    await ws.close()


async def test_routing_between_clients(server, session):
    a = await WsRecorder(session, server.ws_url).connect("client-a")
    b = await WsRecorder(session, server.ws_url).connect("client-b")
    ma, mb = a.mark(), b.mark()
    await run(
        session,
        server,
        a,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9},
            },
            "2": save(["1", 0]),
        },
        client_id="client-a",
    )
    await b.wait_for(
        lambda m: (
            m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
        ),
        mb,
    )
    assert {m["type"] for m in b.messages[mb:]} == {"status"}
    assert "executing" in {m["type"] for m in a.messages[ma:]}
    await a.close()
    await b.close()


async def test_reconnect_during_execution_gets_current_node(server, session):
    server.faults.update(node_delay=0.4, node_delay_classes=["ImageInvert"])
    a = await WsRecorder(session, server.ws_url).connect("same-id")
    mark = a.mark()
    async with session.post(
        server.url + "/prompt",
        json={
            "client_id": "same-id",
            "prompt": {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1},
                },
                "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "2": save(["3", 0]),
            },
        },
    ) as resp:
        pid = (await resp.json())["prompt_id"]
    await a.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "3", mark)
    await a.close()
    ws = await session.ws_connect(server.ws_url + "?clientId=same-id")
    first = await ws.receive_json(timeout=5)
    second = await ws.receive_json(timeout=5)
    assert first["type"] == "status" and first["data"]["sid"] == "same-id"
    assert second == {"type": "executing", "data": {"node": "3"}}
    rest = []
    while not (rest and rest[-1]["type"] == "executing" and rest[-1]["data"]["node"] is None):
        rest.append(await ws.receive_json(timeout=5))
    assert rest[-1]["data"]["prompt_id"] == pid
    await ws.close()


async def test_interrupt_when_idle_does_not_leak_into_next_prompt(server, session):
    async with session.post(server.url + "/interrupt", json={}) as resp:
        assert resp.status == 200
    ws = await WsRecorder(session, server.ws_url).connect("t")
    entry, _ = await run(
        session,
        server,
        ws,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 2},
            },
            "2": save(["1", 0]),
        },
    )
    assert entry["status"]["status_str"] == "success"
    await ws.close()


async def test_free_memory_drops_cache(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 3},
        },
        "2": save(["1", 0]),
    }
    await run(session, server, ws, prompt)
    _, msgs = await run(session, server, ws, prompt)
    assert next(m for m in msgs if m["type"] == "execution_cached")["data"]["nodes"] == ["1", "2"]
    async with session.post(server.url + "/free", json={"free_memory": True}) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.1)
    _, msgs = await run(session, server, ws, prompt)
    assert next(m for m in msgs if m["type"] == "execution_cached")["data"]["nodes"] == []
    await ws.close()


async def test_cache_none(tmp_path, session):
    async with ComfyTestServer(root=tmp_path, cache="none") as server:
        ws = await WsRecorder(session, server.ws_url).connect("t")
        prompt = {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 3},
            },
            "2": save(["1", 0]),
        }
        for n in (1, 2):
            entry, msgs = await run(session, server, ws, prompt)
            assert next(m for m in msgs if m["type"] == "execution_cached")["data"]["nodes"] == []
            assert entry["outputs"]["2"]["images"][0]["filename"] == f"t_{n:05}_.png"
        await ws.close()


async def test_history_endpoints(server, session):
    ws = await WsRecorder(session, server.ws_url).connect("t")
    ids = []
    for i in range(3):
        entry, _ = await run(
            session,
            server,
            ws,
            {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 40 + i},
                },
                "2": save(["1", 0]),
            },
        )
        ids.append(entry["prompt"][1])
    async with session.get(server.url + "/history", params={"max_items": "2"}) as resp:
        assert list(await resp.json()) == ids[1:]
    async with session.post(server.url + "/history", json={"delete": [ids[0]]}) as resp:
        assert (resp.status, await resp.read()) == (200, b"")
    async with session.get(server.url + "/api/history") as resp:
        assert list(await resp.json()) == ids[1:]
    async with session.post(server.url + "/api/history", json={"clear": True}) as resp:
        assert resp.status == 200
    async with session.get(f"{server.url}/history/{ids[2]}") as resp:
        assert (resp.status, await resp.json()) == (200, {})
    async with session.get(f"{server.url}/api/jobs/{ids[2]}") as resp:
        assert (resp.status, await resp.json()) == (404, {"error": "Job not found"})
    await ws.close()


# -- uploads and /view -----------------------------------------------------------------------


async def test_upload_rules(server, session):
    a, b = png((1, 2, 3)), png((4, 5, 6))
    assert await upload(session, server, "x.png", a) == (
        200,
        {"name": "x.png", "subfolder": "", "type": "input"},
    )
    assert (await upload(session, server, "x.png", a))[1]["name"] == "x.png"
    assert (await upload(session, server, "x.png", b))[1]["name"] == "x (1).png"
    assert (await upload(session, server, "x.png", png((7, 8, 9))))[1]["name"] == "x (2).png"
    assert (await upload(session, server, "x.png", b, overwrite="true"))[1]["name"] == "x.png"
    assert (server.input_dir / "x.png").read_bytes() == b
    status, body = await upload(session, server, "y.png", a, subfolder="deep/er", type="temp")
    assert body == {"name": "y.png", "subfolder": "deep/er", "type": "temp"}
    assert (server.temp_dir / "deep" / "er" / "y.png").is_file()
    status, _ = await upload(session, server, "z.png", a, subfolder="../../outside")
    assert status == 400
    status, _ = await upload(session, server, "z.png", a, type="nonsense")
    assert status == 500


async def test_view_rules(server, session):
    server.add_input("in.png", png((1, 1, 1)))
    (server.temp_dir / "sub").mkdir()
    (server.temp_dir / "sub" / "t.png").write_bytes(png((2, 2, 2)))
    assert (await view(session, server, filename="in.png", type="input"))[:2] == (200, "image/png")
    assert (await view(session, server, filename="t.png", type="temp", subfolder="sub"))[0] == 200
    assert (await view(session, server, filename="in.png [input]"))[0] == 200
    for query, expected in (
        ({"filename": "missing.png"}, 404),
        ({"type": "output"}, 404),
        ({"filename": "../../etc/passwd", "type": "output"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": "in.png", "type": "bogus"}, 400),
        ({"filename": "in.png", "type": "input", "subfolder": "../.."}, 403),
    ):
        status, ctype, body = await view(session, server, **query)
        assert (status, body) == (expected, b""), query
        assert ctype is None or expected == 403
    status, ctype, data = await view(
        session, server, filename="in.png", type="input", preview="jpeg;50"
    )
    assert (status, ctype) == (200, "image/jpeg")
    status, ctype, data = await view(session, server, filename="in.png", type="input", channel="a")
    assert Image.open(io.BytesIO(data)).mode == "RGBA"


async def test_queue_and_misc_routes(server, session):
    async with session.get(server.url + "/queue") as resp:
        assert await resp.json() == {"queue_running": [], "queue_pending": []}
    async with session.delete(server.url + "/queue") as resp:
        assert (resp.status, await resp.text()) == (405, "405: Method Not Allowed")
    async with session.get(server.url + "/api/prompt") as resp:
        assert await resp.json() == {"exec_info": {"queue_remaining": 0}}
    async with session.get(server.url + "/api/object_info") as resp:
        info = await resp.json()
    assert len(info) == 568 + 2 and "FleetTestSlow" in info and "KSampler" in info
    async with session.get(server.url + "/models/not_a_folder") as resp:
        assert resp.status == 404
    server.add_model("embeddings", "emb.pt")
    async with session.get(server.url + "/embeddings") as resp:
        assert await resp.json() == ["emb"]
    async with session.get(server.url + "/api/api/jobs") as resp:  # ComfyUI's double prefix
        assert resp.status == 200


# -- runners and the command line ------------------------------------------------------------


def test_run_in_thread(tmp_path):
    with ComfyTestServer(root=tmp_path).run_in_thread() as srv:
        with urllib.request.urlopen(srv.url + "/system_stats", timeout=5) as resp:
            assert json.loads(resp.read())["system"]["comfyui_version"] == "0.8.0"
        srv.faults.node_delay = 0.01
        assert srv.server.faults.node_delay == 0.01
        srv.die()
        with pytest.raises(OSError):
            urllib.request.urlopen(srv.url + "/system_stats", timeout=2)
        srv.restart()
        with urllib.request.urlopen(srv.url + "/prompt", timeout=5) as resp:
            assert resp.status == 200


def test_cli_serves_system_stats(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfyfleet.testing",
            "--port",
            "0",
            "--root",
            str(tmp_path),
            "--slow",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.split("listening on ")[1].split()[0]
        with urllib.request.urlopen(url + "/system_stats", timeout=5) as resp:
            stats = json.loads(resp.read())
        assert stats["system"]["comfyui_version"] == "0.8.0"
        with urllib.request.urlopen(url + "/_testing/faults", timeout=5) as resp:
            assert json.loads(resp.read())["node_delay"] == 0.01
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_cli_fixed_port(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ComfyTestServer.start_subprocess(root=tmp_path, port=port) as proc:
        assert proc.port == port
        deadline = time.monotonic() + 5
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/system_stats", timeout=5) as resp:
            assert resp.status == 200
        assert time.monotonic() < deadline
        assert os.path.isdir(proc.input_dir)


# -- quirks of ComfyUI 0.8.0 that clients meet, kept on purpose ------------------------------


async def test_cached_rerun_without_client_id_has_no_outputs(server, session):
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77},
        },
        "2": save(["1", 0]),
    }
    outputs = []
    for _ in range(2):
        async with session.post(server.url + "/prompt", json={"prompt": prompt}) as resp:
            pid = (await resp.json())["prompt_id"]
        for _ in range(200):
            async with session.get(f"{server.url}/history/{pid}") as resp:
                entry = await resp.json()
            if entry:
                break
            await asyncio.sleep(0.01)
        outputs.append(entry[pid]["outputs"])
    assert outputs[0]["2"]["images"][0]["filename"] == "t_00001_.png"
    assert outputs[1] == {}  # ComfyUI records cached UI output only when there is a client


async def test_reused_client_id_loses_registration_when_old_socket_closes(server, session):
    old = await session.ws_connect(server.ws_url + "?clientId=dup")
    await old.receive_json()
    new = await WsRecorder(session, server.ws_url).connect("dup")
    await old.close()
    await asyncio.sleep(0.05)
    mark = new.mark()
    async with session.post(
        server.url + "/prompt",
        json={
            "client_id": "dup",
            "prompt": {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 78},
                },
                "2": save(["1", 0]),
            },
        },
    ) as resp:
        pid = (await resp.json())["prompt_id"]
    for _ in range(200):
        async with session.get(f"{server.url}/history/{pid}") as resp:
            if pid in await resp.json():
                break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert new.messages[mark:] == []  # unregistered: not even status broadcasts arrive
    await new.close()
