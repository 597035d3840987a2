"""execute() end to end against the ComfyUI test server."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
from PIL import Image

from comfyfleet.execute import execute
from comfyfleet.jobs import InputImage, JobSpec
from comfyfleet.outputs.inline import InlineSink

from .pipeline_helpers import b64png, w1, w2


async def test_w1_returns_the_image_inline(comfy, client, settings) -> None:
    result = await execute(
        JobSpec(workflow=w1(color=0x336699)), client, InlineSink(), settings=settings
    )
    [art] = result.artifacts
    assert (art.node_id, art.kind, art.media_type, art.type) == (
        "2",
        "image",
        "image/png",
        "output",
    )
    assert art.subfolder == result.job_id
    img = Image.open(io.BytesIO(base64.b64decode(art.data)))
    assert img.size == (64, 64)
    assert img.getpixel((0, 0)) == (0x33, 0x66, 0x99)
    assert set(result.timings) >= {"prepare", "upload", "submit", "run", "deliver", "cleanup"}


async def test_w2_inverts_the_uploaded_image(comfy, client, settings) -> None:
    spec = JobSpec(workflow=w2(), images=[InputImage(name="in.png", image=b64png())])
    result = await execute(spec, client, InlineSink(), settings=settings)
    [art] = result.artifacts
    assert tuple(pixels(art)[0, 0]) == (245, 54, 225)


def comfy_inverse(color: tuple[int, int, int]) -> np.ndarray:
    """LoadImage → ImageInvert → SaveImage as ComfyUI computes it (float32, truncating)."""
    x = np.array(color, dtype=np.float32) / np.float32(255)
    return np.clip(np.float32(255) * (np.float32(1) - x), 0, 255).astype(np.uint8)


def pixels(artifact) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(artifact.data))).convert("RGB"))


async def test_concurrent_jobs_sharing_an_input_name_get_their_own_image(client, settings) -> None:
    colors = [(i * 12, 255 - i * 12, (i * 37) % 256) for i in range(20)]
    specs = [
        JobSpec(workflow=w2(), images=[InputImage(name="photo.png", image=b64png(color=c))])
        for c in colors
    ]
    results = await asyncio.gather(
        *(execute(spec, client, InlineSink(), settings=settings) for spec in specs)
    )
    for color, result in zip(colors, results, strict=True):
        [art] = result.artifacts
        got = pixels(art)
        assert np.all(got == comfy_inverse(color)), (color, got[0, 0])
