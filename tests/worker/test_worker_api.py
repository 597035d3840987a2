"""`comfyfleet worker --local` driven through the runpod SDK's local API (HTTP), against the
ComfyUI test server in its own process. One worker process serves the whole module."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from comfyfleet.testing import ComfyTestServer

from .worker_helpers import ProgressReceiver, RecordingProxy, SwarmStandIn, WorkerProcess

MAX_INPUT = 300_000


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(entry: dict) -> Image.Image:
    assert entry["type"] == "base64", entry
    return Image.open(io.BytesIO(base64.b64decode(entry["data"])))


def save(src: str, prefix: str = "out") -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": [src, 0], "filename_prefix": prefix}}


def load(name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def slow(src: str, steps: int, seconds: float) -> dict:
    inputs = {"image": [src, 0], "steps": steps, "seconds_per_step": seconds, "seed": 1}
    return {"class_type": "FleetTestSlow", "inputs": inputs}


TEMPLATES = {
    # seed 001's shape: its placeholders decide where the prompt, image and size go
    "video_i2v": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "{{ INPUT_IMAGE }}"}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "nearest-exact",
                "width": "{{ WIDTH | 16 }}",
                "height": "{{ HEIGHT | 16 }}",
                "crop": "disabled",
            },
        },
        "3": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["2", 0],
                "filename_prefix": "{{ VIDEO_PROMPT }}",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
    },
    "invert": {
        "1": load("unused.png"),
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": save("2", "inverted"),
    },
    "solid": {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": "{{ COLOR | 0 }}"},
        },
        "2": save("1", "solid"),
    },
}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    server = ComfyTestServer.start_subprocess(root=tmp_path_factory.mktemp("comfy"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(comfy):
    recorder = RecordingProxy(comfy.url)
    yield recorder
    recorder.server.close()


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory, comfy, proxy, swarm: SwarmStandIn, progress_receiver: ProgressReceiver
):
    templates = tmp_path_factory.mktemp("templates")
    for name, graph in TEMPLATES.items():
        (templates / f"{name}.json").write_text(json.dumps(graph))
    env = {
        "COMFYUI_URL": proxy.url,  # a pass-through that shows us each POST /prompt
        "COMFYFLEET_TEMPLATES_DIR": str(templates),
        "COMFYFLEET_COMFY_INPUT_DIR": str(comfy.input_dir),
        "COMFYFLEET_COMFY_OUTPUT_DIR": str(comfy.output_dir),
        "COMFYFLEET_WIPE_ZERO_FILL": "true",
        "COMFYFLEET_MAX_INPUT_BYTES": str(MAX_INPUT),
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
        "SWARMUI_URL": swarm.url,
        "RUNPOD_WEBHOOK_POST_OUTPUT": progress_receiver.webhook,
    }
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


def completed(answer: dict) -> dict:
    assert answer["status"] == "COMPLETED", answer
    return answer["output"]


def failed(answer: dict) -> str:
    assert answer["status"] == "FAILED", answer
    return answer["error"]


# --- input formats ---------------------------------------------------------------------------
def sent_extra_data(proxy, prompt_id: str) -> dict:
    (body,) = [p for p in proxy.prompts if p.get("prompt_id") == prompt_id]
    return body.get("extra_data", {})


def test_reference_worker_format(worker, proxy):
    """worker-comfyui's {workflow, images:[{name, image}]}: images go where the graph names them;
    its API key reaches ComfyUI as extra_data.api_key_comfy_org."""
    workflow = {
        "1": load("b.png"),
        "2": load("a.png"),
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": save("3"),
    }
    images = [
        {"name": "a.png", "image": b64(png((255, 0, 0)))},
        {"name": "b.png", "image": "data:image/png;base64," + b64(png((0, 0, 255)))},
    ]
    out = completed(
        worker.runsync({"workflow": workflow, "images": images, "api_key_comfy_org": "key-123"})
    )
    assert [e["filename"] for e in out["images"]] == ["out_00001_.png"]
    assert decode(out["images"][0]).getpixel((0, 0)) == (255, 255, 0)  # inverted blue = b.png
    assert out["videos"] == []
    result = out["comfyfleet"]
    assert result["status"] == "succeeded" and result["artifacts"][0]["size"] > 0
    assert sent_extra_data(proxy, result["prompt_id"]) == {"api_key_comfy_org": "key-123"}


def test_seed_001_video_request(worker, proxy):
    out = completed(
        worker.runsync(
            {
                "prompt": "surfing-cat",
                "image": b64(png((0, 128, 0))),
                "width": 24,
                "height": 12,
                "comfyui_workflow_name": "video_i2v",
                "comfy_org_api_key": "org-key",
            }
        )
    )
    (video,) = out["images"] + out["videos"]  # one frame: ComfyUI 0.8.0 omits "animated"
    assert video["filename"].startswith("surfing-cat_") and video["filename"].endswith(".webp")
    assert decode(video).size == (24, 12)
    sent = sent_extra_data(proxy, out["comfyfleet"]["prompt_id"])
    assert sent == {"api_key_comfy_org": "org-key"}


def test_seed_002_multi_image_prompt_and_random_seeds(worker):
    """Bare base64 images fill LoadImage nodes in numeric node-id order (2 before 10); seeds
    are randomised on every run."""
    workflow = {
        "10": load("x.png"),
        "2": load("y.png"),
        "3": slow("2", 1, 0.0),
        "4": save("3", "first"),
        "11": save("10", "second"),
    }
    body = {"workflow": workflow, "images": [b64(png((1, 2, 3))), b64(png((4, 5, 6)))]}
    first = completed(worker.runsync(body))
    second = completed(worker.runsync(body))
    colors = [decode(e).getpixel((0, 0)) for e in first["images"]]
    assert colors == [(1, 2, 3), (4, 5, 6)]  # node 4 (from node 2) first, then node 11
    seeds = [r["comfyfleet"]["seeds"]["3"]["seed"] for r in (first, second)]
    assert seeds[0] != 1 and seeds[1] != 1 and seeds[0] != seeds[1]


def test_comfyfleet_jobspec_with_template_and_params(worker):
    out = completed(
        worker.runsync({"template": "solid", "params": {"COLOR": 0x102030}, "timeout": 60})
    )
    assert decode(out["images"][0]).getpixel((0, 0)) == (0x10, 0x20, 0x30)
    out = completed(
        worker.runsync({"template": "invert", "images": [{"image": b64(png((0, 0, 0)))}]})
    )
    assert decode(out["images"][0]).getpixel((0, 0)) == (255, 255, 255)
    assert out["comfyfleet"]["timings"]["run"] > 0


def animation(colors: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in colors]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def test_video_artifact_from_the_animated_output_node(worker):
    """LoadImage turns an animated input into a batch of frames; SaveAnimatedWEBP makes the clip."""
    workflow = {
        "1": load("clip.gif"),
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "anim",
                "fps": 8.0,
                "lossless": False,
                "quality": 80,
                "method": "default",
            },
        },
    }
    frames = animation([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    out = completed(worker.runsync({"workflow": workflow, "images": [b64(frames)]}))
    assert out["images"] == []
    (video,) = out["videos"]
    clip = decode(video)
    assert clip.format == "WEBP" and clip.n_frames == 3
    assert out["comfyfleet"]["artifacts"][0]["kind"] == "video"


# --- errors: one precise message each, and the worker keeps serving --------------------------
@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b64(os.urandom(MAX_INPUT + 3000)), f"images[0] is larger than the {MAX_INPUT} bytes"),
        ("not*base64!", "images[0] is not valid base64"),
        ("http://127.0.0.1:9/x.png", "images[0]: 127.0.0.1 resolves to a non-public address"),
        ("file:///etc/passwd", "images[0]: only http(s) URLs may be fetched"),
    ],
    ids=["oversized", "invalid-base64", "private-url", "file-url"],
)
def test_bad_inputs(worker, image, message):
    body = {"template": "invert", "images": [{"image": image}]}
    assert failed(worker.runsync(body)).startswith(message)


def test_validation_error_names_node_and_input(worker):
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": "wide", "height": 8, "batch_size": 1, "color": 0},
        },
        "2": save("1"),
    }
    error = failed(worker.runsync({"workflow": workflow}))
    assert error.startswith("workflow is invalid: node 1 (EmptyImage) input 'width'")


def test_node_failure_and_unknown_template(worker):
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "FleetTestFail", "inputs": {"image": ["1", 0], "message": "boom"}},
        "3": save("2"),
    }
    error = failed(worker.runsync({"workflow": workflow}))
    assert "node 2" in error and "FleetTestFail" in error and "boom" in error
    error = failed(worker.runsync({"template": "nope"}))
    assert error == "no template named 'nope' (available: invert, solid, video_i2v)"
    assert failed(worker.runsync({"action": "dance"})).startswith("unknown action 'dance'")
    assert completed(worker.runsync({"template": "solid"}))["images"]  # still serving


# --- wipe, debug, progress -------------------------------------------------------------------
def job_folder(job_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)


def run_while(worker, body: dict, watch) -> tuple[str, dict]:
    """Start a job over /run, execute it with /status in a thread, call ``watch(job_id)``
    meanwhile; returns (job id, /status answer)."""
    job_id = worker.run(body)
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(worker.status(job_id)))
    thread.start()
    try:
        watch(job_id)
    finally:
        thread.join(60)
    return job_id, answer


def job_files(root: Path, job_id: str) -> list[Path]:
    """The files of one job in a ComfyUI folder (the pipeline names them after the job)."""
    folder = job_folder(job_id)
    return [p for p in root.rglob("*") if p.is_file() and folder in str(p.relative_to(root))]


def test_inputs_and_outputs_are_zero_wiped_unless_debug(worker, comfy, tmp_path: Path):
    body = {
        "workflow": {"1": load("in.png"), "2": slow("1", 20, 0.05), "3": save("2")},
        "images": [{"name": "in.png", "image": b64(png((9, 9, 9)))}],
    }
    kept = tmp_path / "kept-link"

    def link_input(job_id: str) -> None:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            files = job_files(comfy.input_dir, job_id)
            if files and files[0].stat().st_size > 0:
                os.link(files[0], kept)  # same inode: we will see what the wipe wrote
                return
            time.sleep(0.005)
        raise AssertionError("the input never appeared in ComfyUI's input folder")

    job_id, answer = run_while(worker, body, link_input)
    completed(answer)
    assert job_files(comfy.input_dir, job_id) == []
    assert job_files(comfy.output_dir, job_id) == []
    data = kept.read_bytes()
    assert len(data) > 0 and data == bytes(len(data))  # overwritten with zeros before unlink

    out = completed(worker.runsync({**body, "debug": True}))
    job = out["comfyfleet"]["job_id"]
    assert [p.name for p in job_files(comfy.input_dir, job)] == [f"{job_folder(job)}_0_in.png"]
    assert [p.name for p in job_files(comfy.output_dir, job)] == ["out_00001_.png"]


def test_progress_reaches_runpod_and_the_job_log(worker, progress_receiver):
    body = {"workflow": {"1": load("p.png"), "2": slow("1", 12, 0.1), "3": save("2")}}
    body["images"] = [{"name": "p.png", "image": b64(png((1, 1, 1)))}]
    job_id, answer = run_while(worker, body, lambda job_id: None)
    completed(answer)
    end = time.monotonic() + 10  # the SDK posts progress from background threads
    while time.monotonic() < end:
        posted = [p["output"] for p in progress_receiver.for_job(job_id)]
        if any(p.get("stage") == "done" for p in posted):
            break
        time.sleep(0.02)
    posted = [p for p in progress_receiver.for_job(job_id)]
    assert posted and all(p["status"] == "IN_PROGRESS" for p in posted)
    stages = [p["output"] for p in posted]
    steps = [s for s in stages if s.get("node") == "2" and "step" in s]
    assert steps and steps[0]["class_type"] == "FleetTestSlow" and steps[0]["steps"] == 12
    assert 0 < steps[0]["percent"] < 100
    assert len(steps) < 12  # throttled: not one post per step
    assert {"stage": "done", "percent": 100.0} in stages
    lines = [ln for ln in worker.log_text().splitlines() if f"job_id={job_id}" in ln]
    assert any("msg=progress" in ln and '\\"node\\": \\"2\\"' in ln for ln in lines)
    assert any('msg="job finished"' in ln for ln in lines)


# --- seed 000's actions ----------------------------------------------------------------------
def test_health_and_ready(worker, proxy, swarm):
    health = completed(worker.runsync({"action": "health"}))
    assert health["success"] and health["healthy"]
    assert health["comfy"] == {"url": proxy.url, "reachable": True, "version": "0.8.0"}
    assert health["swarm"]["reachable"] and health["resources"]["free_memory_bytes"] > 0
    ready = completed(worker.runsync({"action": "ready"}))
    assert ready["success"] and ready["ready"]
    assert ready["session_id"].startswith("sess-") and ready["version"] == "0.9.7-standin"


def test_swarm_api_passthrough(worker, swarm):
    payload = {"session_id": "sess-1", "prompt": "mountain", "images": 1}
    out = completed(
        worker.runsync(
            {"action": "swarm_api", "path": "/API/GenerateText2Image", "payload": payload}
        )
    )
    assert out == {
        "success": True,
        "response": {"images": ["View/local/raw/x.png"], "echo": payload},
    }
    assert swarm.calls[-1] == ("POST", "/API/GenerateText2Image", payload)
    out = completed(
        worker.runsync({"action": "swarm_api", "method": "GET", "path": "/API/ListModels"})
    )
    assert out["response"] == {"files": [{"name": "sdxl.safetensors"}]}


def test_swarm_api_errors_come_back_wrapped(worker):
    error = failed(worker.runsync({"action": "swarm_api", "path": "/API/Broken"}))
    assert error.startswith("SwarmUI answered HTTP 500 to POST /API/Broken")
    error = failed(worker.runsync({"action": "swarm_api", "path": "/API/Slow", "timeout": 0.3}))
    assert error == "SwarmUI did not answer POST /API/Slow within 0.3 s"


def test_keepalive_and_shutdown_without_a_managed_comfy(worker):
    out = completed(worker.runsync({"action": "keepalive", "duration": 0.3, "interval": 0.1}))
    assert out["success"] and out["alive"] and out["pings"] == 3
    out = completed(worker.runsync({"action": "shutdown"}))
    assert out == {"success": True, "shutdown": True, "comfy_stopped": False}
    assert completed(worker.runsync({"template": "solid"}))["images"]
