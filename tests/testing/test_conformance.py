"""Replays the recordings of the real ComfyUI 0.8.0 (tests/fixtures/comfyui-protocol) against
the test server and compares what comes back.

For each recorded run, the request bodies of its ``exchanges`` are sent as recorded and the
websocket messages and HTTP bodies are compared *whole* after normalization (timestamps, prompt
ids -> P1.., queue numbers -> offsets, tracebacks, tensor reprs and the install path are the only
things masked; message order, types, node ids, states, value types (1 vs 1.0), filenames, error
types/messages/details/input configs all count). Where the recording's timing depended on HTTP
requests made while a prompt ran (queue operations, a second prompt), status messages are
compared as their own sequence and everything else as another.

Deviations from the recorded requests, kept to what the test server cannot reproduce:
* slow prompts (2048x2048 EmptyImage -> ImageScaleBy in f and g) are shrunk to 64x64 (same
  graph, same batch sizes); the slowness comes from the ``node_delay`` fault instead, applied to
  the recorded expectations too;
* the upload in (b) uses PNGs made here (64x48, solid colours), since only sizes were recorded.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from typing import Any

import aiohttp
import pytest
from PIL import Image

from .replay import Normalizer, WsRecorder, load, recorded_message, split_status, types

pytestmark = pytest.mark.timeout(120)


# -- helpers ---------------------------------------------------------------------------------


async def send(session: aiohttp.ClientSession, base: str, request: dict[str, Any]):
    """Send one recorded request; returns (status, content_type, json-or-text)."""
    url = base + request["path"]
    kwargs: dict[str, Any] = {}
    if "query" in request:
        kwargs["params"] = request["query"]
    if "json" in request:
        kwargs["json"] = request["json"]
    elif "body_raw" in request:
        kwargs["data"] = request["body_raw"]
    async with session.request(request["method"], url, **kwargs) as resp:
        raw = await resp.read()
        ctype = resp.headers.get("Content-Type")
        if ctype and ctype.startswith("application/json"):
            return resp.status, ctype, json.loads(raw)
        return resp.status, ctype, raw.decode(errors="replace")


def shrink(obj: Any) -> Any:
    """The recorded slow prompts with 2048x2048 images -> 64x64 (applied to requests and to the
    recorded answers alike)."""
    obj = copy.deepcopy(obj)

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if o.get("class_type") == "EmptyImage" and isinstance(o.get("inputs"), dict):
                inputs = o["inputs"]
                if inputs.get("width") == 2048:
                    inputs["width"] = inputs["height"] = 64
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return obj


class Pair:
    """Our normalizer and the recording's, registered in the same order."""

    def __init__(self, server) -> None:
        self.ours = Normalizer(str(server.root))
        self.rec = Normalizer()

    def register(self, ours: dict[str, Any], recorded: dict[str, Any]) -> None:
        self.ours.register(ours["prompt_id"], ours.get("number"))
        self.rec.register(recorded["prompt_id"], recorded.get("number"))

    def to_ours(self, obj: Any) -> Any:
        """A recorded request with the recorded prompt ids replaced by ours."""
        labels = {v: k for k, v in self.ours.ids.items()}
        if isinstance(obj, dict):
            return {k: self.to_ours(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.to_ours(v) for v in obj]
        if isinstance(obj, str) and obj in self.rec.ids:
            return labels.get(self.rec.ids[obj], obj)
        return obj

    def assert_same(self, ours: Any, recorded: Any, what: str) -> None:
        o, r = self.ours.norm(ours), self.rec.norm(recorded)
        assert o == r, (
            f"{what}: not as recorded\nours:     {json.dumps(o)}\nrecorded: {json.dumps(r)}"
        )


async def post_prompt(session, server, pair: Pair, exchange: dict[str, Any], recorded_json=None):
    request = exchange["request"]
    status, ctype, body = await send(session, server.url, request)
    rec = exchange["response"]
    assert status == rec["status"], body
    assert ctype == rec["content_type"]
    if status == 200:
        pair.register(body, rec["json"])
    pair.assert_same(body, rec["json"] if recorded_json is None else recorded_json, "POST /prompt")
    return body


def messages(run: dict[str, Any], key: str = "ws_messages") -> list[dict[str, Any]]:
    return [recorded_message(m) for m in run[key]]


# -- the websocket handshake -----------------------------------------------------------------


async def test_ws_handshake(server, session):
    rec = load("ws_handshake.json")
    pair = Pair(server)

    plain = rec["plain_client"]
    ws = await session.ws_connect(f"{server.ws_url}?clientId={plain['client_id']}")
    first = await ws.receive_json(timeout=5)
    pair.assert_same(first, plain["received"][0]["msg"], "plain client")
    await ws.close()

    ff = rec["feature_flags_client"]
    ws = await session.ws_connect(f"{server.ws_url}?clientId={ff['client_id']}")
    await ws.send_json(ff["sent"][0])
    got = [await ws.receive_json(timeout=5), await ws.receive_json(timeout=5)]
    pair.assert_same(got, [m["msg"] for m in ff["received"]], "feature_flags client")
    await ws.close()

    anon = rec["no_client_id"]
    ws = await session.ws_connect(server.ws_url)
    first = await ws.receive_json(timeout=5)
    sid = first["data"]["sid"]
    assert len(sid) == 32 and all(c in "0123456789abcdef" for c in sid)
    pair.assert_same(first, anon["received"][0]["msg"], "no clientId")
    await ws.close()


# -- (a) EmptyImage -> SaveImage, then fully cached ------------------------------------------


async def test_a_emptyimage_saveimage(server, session):
    rec = load("a_emptyimage_saveimage.json")
    pair = Pair(server)
    ws = await WsRecorder(session, server.ws_url).connect(rec["client_id"])
    for run in rec["runs"]:
        mark = ws.mark()
        body = await post_prompt(session, server, pair, run["exchanges"][0])
        end = await ws.wait_done(body["prompt_id"], mark)
        pair.assert_same(ws.messages[mark : end + 1], messages(run), run["label"])
        history = run["exchanges"][1]
        _, _, got = await send(
            session, server.url, {**history["request"], "path": f"/history/{body['prompt_id']}"}
        )
        pair.assert_same(got, history["response"]["json"], "history " + run["label"])
    await check_view(session, server, rec["view_output"])
    await ws.close()


async def check_view(session, server, exchange) -> bytes:
    request, expected = exchange["request"], exchange["response"]
    async with session.get(server.url + request["path"], params=request["query"]) as resp:
        data = await resp.read()
        assert resp.status == expected["status"]
        assert resp.headers["Content-Type"] == expected["content_type"]
    first = bytes.fromhex(expected["first_bytes_hex"])
    assert data[: len(first)] == first, "PNG signature/IHDR differ from the recording"
    return data


# -- (b) uploads, LoadImage -> ImageInvert -> SaveImage ---------------------------------------


def png(color: tuple[int, int, int], size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


async def upload(session, server, fields: dict[str, Any]) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for name, value in fields.items():
        if isinstance(value, tuple):
            form.add_field(name, value[1], filename=value[0], content_type="image/png")
        else:
            form.add_field(name, value)
    async with session.post(server.url + "/upload/image", data=form) as resp:
        return resp.status, await resp.json()


async def test_b_upload_loadimage_invert_save(server, session):
    rec = load("b_upload_loadimage_invert_save.json")
    pair = Pair(server)
    src = png((10, 200, 30))
    other = png((11, 200, 30))
    files = [src, src, other, src]  # recorded: 140, 140 (same bytes), 137 (different), 140
    for up, data in zip(rec["uploads"], files, strict=True):
        fields: dict[str, Any] = {}
        for name, value in up["request"]["multipart_form"].items():
            if name == "image":
                filename = value.split("filename='")[1].split("'")[0]
                fields[name] = (filename, data)
            else:
                fields[name] = value
        status, body = await upload(session, server, fields)
        assert status == up["response"]["status"]
        assert body == up["response"]["json"], up.get("note", "")

    ws = await WsRecorder(session, server.ws_url).connect(rec["client_id"])
    for run in rec["runs"]:
        mark = ws.mark()
        body = await post_prompt(session, server, pair, run["exchanges"][0])
        end = await ws.wait_done(body["prompt_id"], mark)
        pair.assert_same(ws.messages[mark : end + 1], messages(run), run["label"])
        history = run["exchanges"][1]
        _, _, got = await send(
            session, server.url, {"method": "GET", "path": f"/history/{body['prompt_id']}"}
        )
        pair.assert_same(got, history["response"]["json"], "history " + run["label"])

    out = await check_view(session, server, rec["view_output"])
    assert Image.open(io.BytesIO(out)).convert("RGB").getpixel((5, 5)) == (245, 54, 225)
    data = await check_view(session, server, rec["view_input"])
    assert data == src
    await ws.close()


# -- (c) validation errors -------------------------------------------------------------------


async def test_c_validation_errors(server, session):
    rec = load("c_validation_errors.json")
    pair = Pair(server)
    ws = await WsRecorder(session, server.ws_url).connect(rec["client_id"])
    for case in rec["cases"]:
        mark = ws.mark()
        exchange = case["exchanges"][0]
        body = await post_prompt(session, server, pair, exchange)
        if exchange["response"]["status"] == 400:
            await asyncio.sleep(0.05)
            assert ws.messages[mark:] == [], f"{case['label']}: a rejected prompt sent messages"
            continue
        end = await ws.wait_done(body["prompt_id"], mark)
        pair.assert_same(ws.messages[mark : end + 1], messages(case), case["label"])
        history = case["exchanges"][1]
        _, _, got = await send(
            session, server.url, {"method": "GET", "path": f"/history/{body['prompt_id']}"}
        )
        pair.assert_same(got, history["response"]["json"], "history " + case["label"])

    for key in ("no_prompt_key", "body_not_json"):
        exchange = rec[key]
        status, ctype, body = await send(session, server.url, exchange["request"])
        assert status == exchange["response"]["status"], key
        assert ctype == exchange["response"]["content_type"], key
        expected = exchange["response"].get("json", exchange["response"].get("text"))
        assert body == expected, key
    await ws.close()


async def test_c_numbers_count_rejected_posts(server, session):
    """`number` counts every POST without a number, rejected or not (not the non-JSON one)."""
    rec = load("c_validation_errors.json")
    ok = rec["cases"][11]["exchanges"][0]["request"]
    bad = rec["cases"][0]["exchanges"][0]["request"]
    numbers = []
    for request in (
        ok,
        bad,
        bad,
        rec["no_prompt_key"]["request"],
        rec["body_not_json"]["request"],
        ok,
    ):
        status, _, body = await send(session, server.url, request)
        if status == 200:
            numbers.append(body["number"])
    assert numbers == [0, 4]


# -- (d) unknown class_type, (e) missing checkpoint ------------------------------------------


@pytest.mark.parametrize("name", ["d_unknown_class_type.json", "e_missing_checkpoint.json"])
async def test_d_e_rejected_prompts(server, session, name):
    rec = load(name)
    pair = Pair(server)
    for case in rec["cases"]:
        exchange = case["exchanges"][0]
        status, ctype, body = await send(session, server.url, exchange["request"])
        assert (status, ctype) == (
            exchange["response"]["status"],
            exchange["response"]["content_type"],
        )
        pair.assert_same(body, exchange["response"]["json"], case["label"])


# -- (f) execution errors --------------------------------------------------------------------


async def test_f_execution_errors(server, session):
    rec = load("f_execution_errors.json")
    pair = Pair(server)
    ws = await WsRecorder(session, server.ws_url).connect(rec["client_id"])

    # The recording ran after (c)/(d)/(e): the last prompt that ran was (c)'s case 11, whose
    # EmptyImage 64x64 is why f's first prompt shows execution_cached ["1"]. Recreate that state.
    prelude = load("c_validation_errors.json")["cases"][11]["exchanges"][0]["request"]
    mark = ws.mark()
    _, _, body = await send(session, server.url, prelude)
    await ws.wait_done(body["prompt_id"], mark)

    for case in rec["cases"][:2]:
        mark = ws.mark()
        body = await post_prompt(session, server, pair, case["exchanges"][0])
        end = await ws.wait_done(body["prompt_id"], mark)
        pair.assert_same(ws.messages[mark : end + 1], messages(case), case["label"])
        history = case["exchanges"][1]
        _, _, got = await send(
            session, server.url, {"method": "GET", "path": f"/history/{body['prompt_id']}"}
        )
        pair.assert_same(got, history["response"]["json"], "history " + case["label"])

    # LoadImage of a file deleted after validation, while a slower prompt runs first.
    case = shrink(rec["cases"][2])
    up = case["upload"]
    filename = up["request"]["multipart_form"]["image"].split("filename='")[1].split("'")[0]
    status, body = await upload(
        session, server, {"image": (filename, png((1, 2, 3))), "overwrite": "true"}
    )
    assert (status, body) == (up["response"]["status"], up["response"]["json"])
    server.faults.update(node_delay=0.8, node_delay_classes=["ImageScaleBy"])
    mark = ws.mark()
    slow = await post_prompt(session, server, pair, case["exchanges"][0])
    await ws.wait_for(lambda m: m["type"] == "execution_start", mark)
    victim = await post_prompt(session, server, pair, case["exchanges"][1])
    (server.input_dir / filename).unlink()
    end = await ws.wait_done(victim["prompt_id"], mark)
    got_status, got_other = split_status(ws.messages[mark : end + 1])
    rec_status, rec_other = split_status(messages(case))
    pair.assert_same(got_other, rec_other, case["label"])
    pair.assert_same(got_status, rec_status, case["label"] + " (status messages)")
    _, _, got = await send(
        session, server.url, {"method": "GET", "path": f"/history/{victim['prompt_id']}"}
    )
    pair.assert_same(got, case["exchanges"][2]["response"]["json"], "history " + case["label"])
    assert slow["prompt_id"] != victim["prompt_id"]
    await ws.close()


# -- (g) interrupts and queue operations ------------------------------------------------------


async def test_g_interrupt_and_queue(server, session):
    rec = shrink(load("g_interrupt_and_queue.json"))
    pair = Pair(server)
    ws = await WsRecorder(session, server.ws_url).connect(rec["client_id"])
    cases = rec["cases"]

    # g0: global interrupt sent once node 2 started -> takes effect when node 3 starts.
    server.faults.update(node_delay=0.8, node_delay_classes=["ImageScaleBy"])
    case = cases[0]
    mark = ws.mark()
    body = await post_prompt(session, server, pair, case["exchanges"][0])
    await ws.wait_for(lambda m: m["type"] == "executing" and m["data"].get("node") == "2", mark)
    status, _, queue = await send(session, server.url, case["exchanges"][1]["request"])
    pair.assert_same(queue, case["exchanges"][1]["response"]["json"], "GET /queue while running")
    status, ctype, text = await send(session, server.url, case["exchanges"][2]["request"])
    assert (status, ctype, text) == (200, None, "")
    end = await ws.wait_done(body["prompt_id"], mark)
    pair.assert_same(ws.messages[mark : end + 1], messages(case), case["label"])
    _, _, g0_history = await send(
        session, server.url, {"method": "GET", "path": f"/history/{body['prompt_id']}"}
    )

    # g1: a targeted interrupt for another prompt id is ignored; for the running one it works.
    case = cases[1]
    mark = ws.mark()
    body = await post_prompt(session, server, pair, case["exchanges"][0])
    await ws.wait_for(lambda m: m["type"] == "executing" and m["data"].get("node") == "2", mark)
    for exchange in case["exchanges"][1:3]:
        status, ctype, text = await send(session, server.url, pair.to_ours(exchange["request"]))
        assert (status, ctype, text) == (200, None, "")
        if exchange is case["exchanges"][1]:
            await asyncio.sleep(0.05)
            assert not any(m["type"] == "execution_interrupted" for m in ws.messages[mark:])
    end = await ws.wait_done(body["prompt_id"], mark)
    pair.assert_same(ws.messages[mark : end + 1], messages(case), case["label"])
    history = case["exchanges"][3]
    _, _, got = await send(
        session, server.url, {"method": "GET", "path": f"/history/{body['prompt_id']}"}
    )
    pair.assert_same(got, history["response"]["json"], "history " + case["label"])
    # g0's entry has the same shape (its recorded GET raced the history write and got {}).
    g0 = next(iter(g0_history.values()))
    assert [m[0] for m in g0["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_interrupted",
    ]
    assert (g0["status"]["status_str"], g0["status"]["completed"], g0["outputs"], g0["meta"]) == (
        "error",
        False,
        {},
        {},
    )

    # g2: one running + three pending; delete one, clear the rest, DELETE /queue, interrupt.
    server.faults.update(node_delay=1.0, node_delay_classes=["EmptyImage"])
    case = cases[2]
    ex = case["exchanges"]
    mark = ws.mark()
    running = await post_prompt(session, server, pair, ex[0])
    await ws.wait_for(lambda m: m["type"] == "execution_start", mark)
    for exchange in ex[1:4]:
        await asyncio.sleep(0.003)  # distinct create_time values, as in the recording
        await post_prompt(session, server, pair, exchange)
    await ws.wait_for(lambda m: m["type"] == "executing" and m["data"].get("node") == "1", mark)
    for exchange in ex[4:12]:
        status, ctype, got = await send(session, server.url, pair.to_ours(exchange["request"]))
        expected = exchange["response"]
        assert (status, ctype) == (expected["status"], expected["content_type"]), exchange.get(
            "note"
        )
        if exchange["request"]["path"] == "/api/jobs":
            ids = set(pair.ours.ids)
            ours = [j for j in got["jobs"] if j["id"] in ids]
            recorded = [j for j in expected["json"]["jobs"] if j["id"] in pair.rec.ids]
            pair.assert_same(ours, recorded, "GET /api/jobs")
        elif "json" in expected:
            pair.assert_same(got, expected["json"], exchange.get("note", ""))
        else:
            assert got == expected["text"], exchange.get("note")
    status, ctype, text = await send(session, server.url, ex[12]["request"])  # interrupt
    assert (status, ctype, text) == (200, None, "")
    end = await ws.wait_done(running["prompt_id"], mark)
    got_status, got_other = split_status(ws.messages[mark : end + 1])
    rec_status, rec_other = split_status(messages(case))
    pair.assert_same(got_other, rec_other, case["label"])
    pair.assert_same(got_status, rec_status, case["label"] + " (status messages)")
    for exchange in ex[13:15]:
        recorded_id = exchange["request"]["path"].rsplit("/", 1)[1]
        our_id = next(k for k, v in pair.ours.ids.items() if v == pair.rec.ids[recorded_id])
        _, _, got = await send(session, server.url, {"method": "GET", "path": f"/history/{our_id}"})
        pair.assert_same(got, exchange["response"]["json"], exchange.get("note", ""))
    await ws.close()


# -- (j) extras: own prompt_id, no client_id, second client, front, number, partial ----------


async def test_j_extras(server, session):
    rec = load("j_extras.json")
    pair = Pair(server)
    a = await WsRecorder(session, server.ws_url).connect(rec["client_id_A"])
    b = await WsRecorder(session, server.ws_url).connect(rec["client_id_B"])

    def done_status(m):
        return m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0

    for i, case in enumerate(rec["cases"]):
        ma, mb = a.mark(), b.mark()
        body = await post_prompt(session, server, pair, case["exchanges"][0])
        if "client_id" in case["exchanges"][0]["request"]["json"]:
            end_a = await a.wait_done(body["prompt_id"], ma)
        else:
            end_a = await a.wait_for(done_status, ma)
        end_b = await b.wait_for(done_status, mb)
        pair.assert_same(
            a.messages[ma : end_a + 1],
            messages(case, "ws_messages_client_A"),
            f"A: {case['label']}",
        )
        pair.assert_same(
            b.messages[mb : end_b + 1],
            messages(case, "ws_messages_client_B"),
            f"B: {case['label']}",
        )
        _, _, got = await send(
            session, server.url, {"method": "GET", "path": f"/history/{body['prompt_id']}"}
        )
        expected = case["exchanges"][1]["response"]["json"]
        if i == 1:
            # Recorded while the first run's entry still existed; after the second run finishes
            # the single entry is the second run's (number +1, color 502).
            entry = got[body["prompt_id"]]
            assert len(got) == 1
            assert pair.ours.number(entry["prompt"][0]) == "#1"
            assert entry["prompt"][2]["1"]["inputs"]["color"] == 502
            continue
        pair.assert_same(got, expected, "history " + case["label"])
        if i == 6:
            ours_keys = list(next(iter(got.values()))["prompt"][3])
            assert ours_keys == list(next(iter(expected.values()))["prompt"][3])
    await a.close()
    await b.close()


# -- (h) read-only endpoints -----------------------------------------------------------------


async def test_h_endpoints(server, session):
    rec = load("h_endpoints.json")
    skip = {"/extensions", "/internal/logs/raw"}
    for exchange in rec["exchanges"]:
        request, expected = exchange["request"], exchange["response"]
        if request["path"] in skip or request["path"].startswith(("/history/8d7", "/api/jobs/8d7")):
            continue  # (the prompt-specific ones are checked below)
        status, ctype, body = await send(session, server.url, request)
        what = f"{request['method']} {request['path']} {request.get('query', '')}"
        assert status == expected["status"], what
        assert ctype == expected["content_type"], what
        if request["path"] == "/history":
            continue  # depends on the recorded session's earlier prompts
        if request["path"] == "/api/jobs":
            assert body["jobs"] == [] and body["pagination"]["limit"] == 3
            continue
        if request["path"].endswith("/system_stats"):  # free memory is volatile
            body, expected = _mask_free(body), {"json": _mask_free(expected["json"])}
        if "json" in expected:
            assert body == expected["json"], what
        else:
            assert body == expected.get("text", ""), what

    # /history/{id} and /api/jobs/{id} of (a)'s first prompt, run here first.
    pair = Pair(server)
    run = load("a_emptyimage_saveimage.json")["runs"][0]
    ws = await WsRecorder(session, server.ws_url).connect(
        run["exchanges"][0]["request"]["json"]["client_id"]
    )
    mark = ws.mark()
    body = await post_prompt(session, server, pair, run["exchanges"][0])
    await ws.wait_done(body["prompt_id"], mark)
    for exchange in rec["exchanges"]:
        path = exchange["request"]["path"]
        if path.startswith(("/history/8d7", "/api/jobs/8d7")):
            status, _, got = await send(
                session,
                server.url,
                pair.to_ours(exchange["request"])
                | {"path": path.replace(run["prompt_id"], body["prompt_id"])},
            )
            assert status == exchange["response"]["status"]
            pair.assert_same(got, exchange["response"]["json"], path)
    await ws.close()


def _mask_free(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: ("<free>" if k.endswith("_free") else _mask_free(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_free(v) for v in obj]
    return obj


# -- (i) progress messages and previews: the test-only sampler-like node -----------------------


def _is_binary_or_about(m: dict[str, Any], node: str) -> bool:
    if m["type"].startswith("binary:"):
        return True
    kinds = ("executing", "executed", "execution_interrupted")
    return m["type"] in kinds and node in (m["data"].get("node"), m["data"].get("node_id"))


def _sampler_pattern(msgs: list[dict[str, Any]], node: str) -> list[str]:
    """The per-step pattern of one node: progress_state / progress / binary frames."""
    out = []
    for m in msgs:
        t = m["type"]
        if t == "progress_state":
            st = m["data"]["nodes"].get(node)
            if st is not None:
                out.append(f"progress_state:{st['state']}:{type(st['value']).__name__}")
        elif t == "progress" and m["data"]["node"] == node:
            assert set(m["data"]) == {"value", "max", "prompt_id", "node"}
            out.append("progress")
        elif _is_binary_or_about(m, node):
            out.append(t)
    return out


@pytest.mark.parametrize("case_index", [0, 1, 2])
async def test_i_progress_shapes(server, session, case_index):
    rec = load("i_synthetic_progress_previews.json")
    case = rec["cases"][case_index]
    expected = _sampler_pattern(messages(case), "4")
    flags = {"supports_preview_metadata": True} if case_index == 1 else None
    ws = await WsRecorder(session, server.ws_url).connect("progress-client", flags)
    extra = case["exchanges"][0]["request"]["json"].get("extra_data", {})
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 7},
        },
        "4": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": 4, "seconds_per_step": 0.0},
        },
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "i"}},
    }
    mark = ws.mark()
    async with session.post(
        server.url + "/prompt",
        json={"prompt": prompt, "client_id": "progress-client", "extra_data": extra},
    ) as r:
        pid = (await r.json())["prompt_id"]
    end = await ws.wait_done(pid, mark)
    got = ws.messages[mark : end + 1]
    assert _sampler_pattern(got, "4") == expected
    for m in got:
        if m["type"] == "binary:4":
            assert m["data"] == {
                "node_id": "4",
                "prompt_id": pid,
                "display_node_id": "4",
                "parent_node_id": None,
                "real_node_id": "4",
                "image_type": "image/jpeg",
            }
        if m["type"] == "binary:1":
            assert m["data"] == {"image_format": 1}
    await ws.close()


async def test_i_interrupt_mid_node(server, session):
    rec = load("i_synthetic_progress_previews.json")
    case = rec["cases"][3]
    expected = _sampler_pattern(messages(case), "4")
    ws = await WsRecorder(session, server.ws_url).connect("progress-client")
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 8},
        },
        "4": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": 200, "seconds_per_step": 0.05},
        },
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "i"}},
    }
    # Prime the cache so that, as in the recording, the sampler's inputs are cached.
    prelude = copy.deepcopy(prompt)
    prelude["4"]["inputs"]["steps"] = 1
    mark = ws.mark()
    async with session.post(
        server.url + "/prompt", json={"prompt": prelude, "client_id": "progress-client"}
    ) as r:
        await ws.wait_done((await r.json())["prompt_id"], mark)
    mark = ws.mark()
    extra = case["exchanges"][0]["request"]["json"].get("extra_data", {})
    async with session.post(
        server.url + "/prompt",
        json={"prompt": prompt, "client_id": "progress-client", "extra_data": extra},
    ) as r:
        pid = (await r.json())["prompt_id"]
    third = await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["value"] == 3, mark)
    # the recorder sent its interrupt after the 3rd progress message (and its preview frame)
    await ws.wait_for(lambda m: m["type"] == "binary:1", third)
    async with session.post(server.url + "/interrupt", json={"prompt_id": pid}) as r:
        assert r.status == 200
    end = await ws.wait_done(pid, mark)
    got = ws.messages[mark : end + 1]
    assert _sampler_pattern(got, "4") == expected
    interrupted = next(m for m in got if m["type"] == "execution_interrupted")["data"]
    recorded = next(m for m in messages(case) if m["type"] == "execution_interrupted")["data"]
    assert {k: v for k, v in interrupted.items() if k not in ("prompt_id", "timestamp")} == {
        k: v for k, v in recorded.items() if k not in ("prompt_id", "timestamp", "node_type")
    } | {"node_type": "FleetTestSlow"}
    assert types(got[-3:]) == types(messages(case)[-3:])
    await ws.close()
