"""The inline sink: artifacts come back as base64 inside the result (RunPod's default).

Encodes while the bytes stream in, in pieces whose length is a multiple of 3 so the pieces'
base64 concatenates to the base64 of the whole; only the encoded text is kept, never the raw
file next to it.
"""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterator

from comfyfleet.errors import PayloadTooLarge
from comfyfleet.jobs import Artifact


class InlineSink:
    def __init__(self, *, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes

    async def store(self, artifact: Artifact, chunks: AsyncIterator[bytes]) -> Artifact:
        encoded = bytearray()
        carry = b""
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if self.max_bytes is not None and size > self.max_bytes:
                raise PayloadTooLarge(
                    f"{artifact.filename} is larger than the {self.max_bytes} bytes allowed "
                    "inline; use an S3 or local sink",
                    filename=artifact.filename,
                )
            if carry:
                chunk = carry + chunk
            cut = len(chunk) - len(chunk) % 3
            encoded += binascii.b2a_base64(memoryview(chunk)[:cut], newline=False)
            carry = chunk[cut:]
        encoded += binascii.b2a_base64(carry, newline=False)
        return artifact.model_copy(update={"data": encoded.decode("ascii"), "size": size})
