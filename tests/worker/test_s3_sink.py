"""S3Sink against moto's S3 server running as a separate process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from comfyfleet.errors import StorageError
from comfyfleet.jobs import Artifact
from comfyfleet.outputs.s3 import MIN_PART_SIZE, S3Sink

MiB = 2**20


def artifact(name: str = "out.png", kind: str = "image") -> Artifact:
    return Artifact(node_id="9", filename=name, kind=kind, media_type="image/png")


async def stream(total: int, chunk: int = 256 * 1024, fail_after: int | None = None):
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        if fail_after is not None and sent >= fail_after:
            raise RuntimeError("source broke")
        yield bytes([(sent // chunk) % 251]) * n
        sent += n


def expected(total: int, chunk: int = 256 * 1024) -> bytes:
    return b"".join(
        bytes([(i // chunk) % 251]) * min(chunk, total - i) for i in range(0, total, chunk)
    )


def sink(s3_client, bucket: str, endpoint: str, **kw) -> S3Sink:
    return S3Sink(s3_client, bucket, endpoint_url=endpoint, scope="job1", **kw)


async def test_small_artifact_is_one_put_and_a_plain_url(s3_client, bucket, s3_endpoint):
    async def one() -> AsyncIterator[bytes]:
        yield b"\x89PNG tiny"

    out = await sink(s3_client, bucket, s3_endpoint).store(artifact(), one())
    assert out.url == f"{s3_endpoint}/{bucket}/job1/out.png"
    assert out.size == 9 and out.data is None
    obj = s3_client.get_object(Bucket=bucket, Key="job1/out.png")
    assert obj["Body"].read() == b"\x89PNG tiny"
    assert obj["ContentType"] == "image/png"
    assert httpx.get(out.url).status_code == 403  # a plain URL needs a public bucket


async def test_large_artifact_streams_as_multipart(s3_client, bucket, s3_endpoint):
    total = 3 * MIN_PART_SIZE + 123
    s = sink(s3_client, bucket, s3_endpoint, part_size=MIN_PART_SIZE)
    out = await s.store(artifact("clip.mp4", "video"), stream(total))
    assert out.size == total
    obj = s3_client.get_object(Bucket=bucket, Key="job1/clip.mp4")
    assert obj["ETag"].strip('"').endswith("-4")  # four parts: 3 full + the tail
    assert obj["Body"].read() == expected(total)


async def test_failed_stream_aborts_the_multipart_upload(s3_client, bucket, s3_endpoint):
    s = sink(s3_client, bucket, s3_endpoint, part_size=MIN_PART_SIZE)
    with pytest.raises(RuntimeError, match="source broke"):
        await s.store(artifact("clip.mp4"), stream(4 * MIN_PART_SIZE, fail_after=2 * MiB * 6))
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    listed = s3_client.list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0


async def test_keys_are_scoped_to_the_job_once():
    s = S3Sink(None, "b", endpoint_url="http://s3", prefix="out/", scope="job1")
    assert s.key_for(Artifact(node_id="1", filename="a.png")) == "out/job1/a.png"
    in_job = Artifact(node_id="1", filename="a.png", subfolder="job1/sub")
    assert s.key_for(in_job) == "out/job1/sub/a.png"
    other = Artifact(node_id="1", filename="a.png", subfolder="job10")
    assert s.key_for(other) == "out/job1/job10/a.png"


async def test_presigned_url(s3_client, bucket, s3_endpoint):
    async def one() -> AsyncIterator[bytes]:
        yield b"secret"

    out = await sink(s3_client, bucket, s3_endpoint, presign_seconds=120).store(
        artifact("a b.png"), one()
    )
    assert "X-Amz-Signature=" in out.url and "X-Amz-Expires=120" in out.url
    assert httpx.get(out.url).content == b"secret"


async def test_missing_bucket_is_a_storage_error_naming_it(s3_client, s3_endpoint):
    async def one() -> AsyncIterator[bytes]:
        yield b"x"

    with pytest.raises(StorageError, match=r"s3://no-such-bucket/job1/out.png failed"):
        await sink(s3_client, "no-such-bucket", s3_endpoint).store(artifact(), one())
