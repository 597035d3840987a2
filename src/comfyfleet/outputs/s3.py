"""S3-compatible sink: artifacts stream into a multipart upload and come back as URLs.

A video can be larger than the worker's memory headroom, so bytes are never gathered: the chunk
stream fills one part at a time (8 MiB by default) and each part is sent from a worker thread
while the next one fills, so at most two parts are held. A small artifact (under one part) is a
single PUT. A failed or cancelled upload is aborted so no orphaned parts are billed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from comfyfleet.config import Settings
from comfyfleet.errors import StorageError
from comfyfleet.jobs import Artifact

log = logging.getLogger(__name__)

PART_SIZE = 8 * 2**20
MIN_PART_SIZE = 5 * 2**20  # S3's floor for every part but the last


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for the BUCKET_* settings (path-style, works with R2/MinIO/moto)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.bucket_endpoint_url,
        aws_access_key_id=settings.bucket_access_key_id,
        aws_secret_access_key=settings.bucket_secret_access_key,
        region_name=settings.bucket_region or "us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


class S3Sink:
    """Uploads each artifact to ``s3://bucket/<prefix><scope>/<subfolder>/<filename>``.

    ``scope`` (the job's folder) keeps jobs apart; it is not repeated when ComfyUI already saved
    the file under it (the pipeline points every save node into the job's folder).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        endpoint_url: str | None,
        prefix: str = "",
        scope: str = "",
        presign_seconds: int | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.client = client
        self.bucket = bucket
        self.endpoint_url = (endpoint_url or "").rstrip("/")
        self.prefix = prefix
        self.scope = scope.strip("/")
        self.presign_seconds = presign_seconds
        self.part_size = part_size

    @classmethod
    def from_settings(cls, settings: Settings, *, scope: str = "", client: Any = None) -> S3Sink:
        if not (settings.bucket_endpoint_url and settings.bucket_name):
            raise StorageError("S3 output needs BUCKET_ENDPOINT_URL and BUCKET_NAME")
        return cls(
            client or make_client(settings),
            settings.bucket_name,
            endpoint_url=settings.bucket_endpoint_url,
            scope=scope,
            presign_seconds=settings.bucket_presign_seconds,
        )

    def key_for(self, artifact: Artifact) -> str:
        folder = artifact.subfolder.strip("/")
        parts = [folder] if folder else []
        if self.scope and folder != self.scope and not folder.startswith(self.scope + "/"):
            parts.insert(0, self.scope)
        return self.prefix + "/".join([*parts, artifact.filename])

    def url_for(self, key: str) -> str:
        if self.presign_seconds:
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=self.presign_seconds,
            )
        return f"{self.endpoint_url}/{self.bucket}/{quote(key)}"

    async def store(self, artifact: Artifact, chunks: AsyncIterator[bytes]) -> Artifact:
        key = self.key_for(artifact)
        upload = _Upload(self, key, artifact.media_type)
        try:
            size = await upload.run(chunks)
        except BaseException as exc:
            await asyncio.shield(upload.abort())
            if _is_boto_error(exc):
                raise StorageError(
                    f"uploading {artifact.filename} to s3://{self.bucket}/{key} failed: {exc}",
                    bucket=self.bucket,
                    key=key,
                    node_id=artifact.node_id,
                ) from exc
            raise
        url = await asyncio.to_thread(self.url_for, key)
        log.info("artifact uploaded", extra={"s3_key": key, "bytes": size})
        return artifact.model_copy(update={"url": url, "size": size, "data": None})


def _is_boto_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


class _Upload:
    """One object's upload: a PUT if it fits in a part, else a pipelined multipart upload."""

    def __init__(self, sink: S3Sink, key: str, media_type: str) -> None:
        self.sink = sink
        self.key = key
        self.media_type = media_type
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.in_flight: asyncio.Task[None] | None = None

    @property
    def _s3(self) -> Any:
        return self.sink.client

    async def run(self, chunks: AsyncIterator[bytes]) -> int:
        part_size = self.sink.part_size
        buffer = bytearray()
        total = 0
        async for chunk in chunks:
            buffer += chunk
            total += len(chunk)
            while len(buffer) >= part_size:
                part = bytes(memoryview(buffer)[:part_size])
                del buffer[:part_size]
                await self._send_part(part)
        if self.upload_id is None:
            await asyncio.to_thread(
                self._s3.put_object,
                Bucket=self.sink.bucket,
                Key=self.key,
                Body=bytes(buffer),
                ContentType=self.media_type,
            )
            return total
        if buffer:
            await self._send_part(bytes(buffer))
        buffer = bytearray()
        await self._drain()
        await asyncio.to_thread(
            self._s3.complete_multipart_upload,
            Bucket=self.sink.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        return total

    async def _send_part(self, data: bytes) -> None:
        """Wait for the previous part, then start this one in the background."""
        if self.upload_id is None:
            created = await asyncio.to_thread(
                self._s3.create_multipart_upload,
                Bucket=self.sink.bucket,
                Key=self.key,
                ContentType=self.media_type,
            )
            self.upload_id = created["UploadId"]
        await self._drain()
        number = len(self.parts) + 1
        self.parts.append({"PartNumber": number})
        self.in_flight = asyncio.create_task(self._upload_part(number, data))

    async def _upload_part(self, number: int, data: bytes) -> None:
        answer = await asyncio.to_thread(
            self._s3.upload_part,
            Bucket=self.sink.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        self.parts[number - 1]["ETag"] = answer["ETag"]

    async def _drain(self) -> None:
        if self.in_flight is not None:
            task, self.in_flight = self.in_flight, None
            await task

    async def abort(self) -> None:
        if self.in_flight is not None:  # its thread cannot be stopped; let it land first
            await asyncio.gather(self.in_flight, return_exceptions=True)
            self.in_flight = None
        if self.upload_id is None:
            return
        try:
            await asyncio.to_thread(
                self._s3.abort_multipart_upload,
                Bucket=self.sink.bucket,
                Key=self.key,
                UploadId=self.upload_id,
            )
            log.warning("multipart upload aborted", extra={"s3_key": self.key})
        except Exception:
            log.exception("could not abort multipart upload", extra={"s3_key": self.key})
