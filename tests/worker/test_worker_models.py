"""Model files a job asks for (``JobSpec.models``), through `comfyfleet worker --local`.

The worker launches the test server from COMFYUI_DIR, whose loaders list ``models/<folder>/``
in their combo lists, exactly as ComfyUI's do. With no volume mounted, the worker's model root
is ``COMFYUI_DIR/models``. So a workflow naming a checkpoint passes validation (ours, then the
server's) only if that file was fetched into ``models/checkpoints/`` before the prompt was
checked; it then reaches execution, where the test server reports CheckpointLoaderSimple as not
implemented. That error, instead of "not in list", is the proof that the file arrived in time.
"""

from __future__ import annotations

import hashlib
import threading

import pytest

from .worker_helpers import FileServer, WorkerProcess, free_port, make_fake_comfy_dir, wait_until

NOT_IMPLEMENTED = "not implemented by the comfyfleet test server"


def checkpoint_workflow(name: str) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "m"}},
    }


@pytest.fixture(scope="module")
def files():
    server = FileServer()
    yield server
    server.server.close()


@pytest.fixture(scope="module")
def comfy_dir(tmp_path_factory):
    return make_fake_comfy_dir(tmp_path_factory.mktemp("comfy"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory, comfy_dir):
    env = {
        "COMFYUI_DIR": str(comfy_dir),
        "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",
        "COMFYUI_ARGS": "--disable-auto-launch",
        "COMFYFLEET_VOLUME_BASES": "[]",  # no network volume: models go to COMFYUI_DIR/models
        "COMFYFLEET_ALLOW_PRIVATE_URLS": "true",  # the file server is on 127.0.0.1
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
    }
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


def failed(answer: dict) -> str:
    assert answer["status"] == "FAILED", answer
    return answer["error"]


def model(files: FileServer, name: str, body: bytes, **extra) -> dict:
    url = files.add(f"/cdn/{name}", body)
    return {"url": url, "folder": "checkpoints", **extra}


def test_the_model_lands_in_its_folder_before_the_prompt_is_checked(worker, files, comfy_dir):
    name = "fetched-v1.safetensors"
    workflow = checkpoint_workflow(name)
    without = failed(worker.runsync({"workflow": workflow}))
    assert f"input 'ckpt_name': Value not in list: ckpt_name: '{name}'" in without

    body = b"weights" * 1000
    wanted = model(files, name, body, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    error = failed(worker.runsync({"workflow": workflow, "models": [wanted]}))
    assert "node 4 (CheckpointLoaderSimple)" in error and NOT_IMPLEMENTED in error, error
    assert (comfy_dir / "models" / "checkpoints" / name).read_bytes() == body

    again = failed(worker.runsync({"workflow": workflow, "models": [wanted]}))
    assert NOT_IMPLEMENTED in again
    assert files.gets[f"/cdn/{name}"] == 1  # cached: the second job downloaded nothing


def test_concurrent_jobs_asking_for_one_file_download_it_once(worker, files, comfy_dir):
    """Both jobs are inside the download (the worker logged "fetching models" for each) before
    the file server lets the bytes go, so the second one can only be waiting on the first's."""
    name = "shared.safetensors"
    job = {"workflow": checkpoint_workflow(name), "models": [model(files, name, b"s" * 4096)]}
    files.gate.clear()
    try:
        ids = [worker.run(job), worker.run(job)]
        answers: dict[str, dict] = {}
        threads = [
            threading.Thread(target=lambda i=i: answers.update({i: worker.status(i, 90)}))
            for i in ids
        ]
        for thread in threads:
            thread.start()

        def both_fetching() -> bool:
            lines = [ln for ln in worker.log_text().splitlines() if 'msg="fetching models"' in ln]
            return all(any(f"job_id={i}" in ln for ln in lines) for i in ids)

        wait_until(both_fetching, 60, "both jobs fetching models")
    finally:
        files.gate.set()
    for thread in threads:
        thread.join(90)
    for job_id in ids:
        assert NOT_IMPLEMENTED in failed(answers[job_id])
    assert files.gets[f"/cdn/{name}"] == 1
    assert (comfy_dir / "models" / "checkpoints" / name).read_bytes() == b"s" * 4096


def test_sha256_mismatch_fails_the_job_and_leaves_no_file(worker, files, comfy_dir):
    name = "tampered.safetensors"
    expected = hashlib.sha256(b"the real weights").hexdigest()
    wanted = model(files, name, b"something else", sha256=expected)
    error = failed(worker.runsync({"workflow": checkpoint_workflow(name), "models": [wanted]}))
    actual = hashlib.sha256(b"something else").hexdigest()
    assert error == (
        f"{wanted['url']}: sha256 mismatch (expected {expected}, got {actual}); "
        "partial file deleted"
    )
    folder = comfy_dir / "models" / "checkpoints"
    assert not (folder / name).exists() and not (folder / f"{name}.part").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"folder": "../escape"},
            "models[0].folder: must be a relative folder such as 'loras', got '../escape'",
        ),
        ({"sha256": "abc"}, "models[0].sha256: must be 64 hex characters"),
        ({"url": "ftp://example.com/x.bin"}, "models[0].url: must be an http(s) URL"),
    ],
)
def test_a_bad_model_entry_is_named_precisely(worker, files, entry, message):
    wanted = {**model(files, "x.safetensors", b"x"), **entry}
    job = {"workflow": checkpoint_workflow("x.safetensors"), "models": [wanted]}
    error = failed(worker.runsync(job))
    assert error.startswith(message), error
