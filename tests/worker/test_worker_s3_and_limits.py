"""The worker with BUCKET_* set (moto's S3 server as a separate process): artifacts come back as
``s3_url`` entries; and a worker whose memory threshold cannot be met refuses jobs clearly."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from comfyfleet.testing import ComfyTestServer

from .worker_helpers import S3_ENV, WorkerProcess

BUCKET = "worker-out"


def job(color: int = 5, batch: int = 1, save: str = "SaveImage") -> dict:
    inputs = {"images": ["1", 0], "filename_prefix": "out"}
    if save == "SaveAnimatedWEBP":
        inputs |= {"fps": 6.0, "lossless": True, "quality": 80, "method": "default"}
    return {
        "workflow": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": batch, "color": color},
            },
            "2": {"class_type": save, "inputs": inputs},
        }
    }


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    server = ComfyTestServer.start_subprocess(root=tmp_path_factory.mktemp("comfy"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_worker(tmp_path_factory, comfy, s3_endpoint, s3_client):
    s3_client.create_bucket(Bucket=BUCKET)
    env = {
        **S3_ENV,
        "COMFYUI_URL": comfy.url,
        "BUCKET_ENDPOINT_URL": s3_endpoint,
        "BUCKET_NAME": BUCKET,
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
    }
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


def output(answer: dict) -> dict:
    assert answer["status"] == "COMPLETED", answer
    return answer["output"]


def test_image_goes_to_s3_and_comes_back_as_a_url(s3_worker, s3_client, s3_endpoint):
    out = output(s3_worker.runsync(job(color=0x123456)))
    (entry,) = out["images"]
    result = out["comfyfleet"]
    artifact = result["artifacts"][0]
    key = f"{artifact['subfolder']}/{entry['filename']}"
    assert artifact["subfolder"].startswith(result["job_id"][:8])
    assert entry == {
        "filename": "out_00001_.png",
        "type": "s3_url",
        "data": f"{s3_endpoint}/{BUCKET}/{key}",
    }
    assert artifact["url"] == entry["data"] and artifact["size"] > 0
    body = s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert Image.open(io.BytesIO(body)).getpixel((0, 0)) == (0x12, 0x34, 0x56)


def test_video_goes_to_s3(s3_worker, s3_client):
    out = output(s3_worker.runsync(job(batch=2, save="SaveAnimatedWEBP")))
    (entry,) = out["videos"]
    assert entry["type"] == "s3_url" and entry["filename"].endswith(".webp")
    key = entry["data"].split(f"/{BUCKET}/", 1)[1]
    head = s3_client.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "image/webp" and head["ContentLength"] > 0


def test_a_missing_bucket_is_a_precise_error(s3_worker, s3_client):
    for obj in s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3_client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3_client.delete_bucket(Bucket=BUCKET)
    try:
        answer = s3_worker.runsync(job())
    finally:
        s3_client.create_bucket(Bucket=BUCKET)
    assert answer["status"] == "FAILED"
    assert answer["error"].startswith("uploading out_00001_.png to s3://worker-out/")
    assert "NoSuchBucket" in answer["error"]
    assert output(s3_worker.runsync(job()))["images"][0]["type"] == "s3_url"


def test_memory_threshold_refuses_jobs_but_answers_actions(tmp_path, comfy):
    env = {"COMFYUI_URL": comfy.url, "COMFYFLEET_MIN_FREE_MEMORY_BYTES": str(10**15)}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        image = base64.b64encode(b"never decoded").decode()
        answer = worker.runsync({**job(), "images": [image]})
        assert answer["status"] == "FAILED"
        assert answer["error"].startswith("not enough free memory before the job: ")
        assert answer["error"].endswith(" MiB free (host), 953674316 MiB required") or (
            "(cgroup)" in answer["error"]
        )
        assert output(worker.runsync({"action": "health"}))["healthy"]
    finally:
        worker.stop()
