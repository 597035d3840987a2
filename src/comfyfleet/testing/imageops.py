"""Image arithmetic the way ComfyUI does it, in numpy.

Images are float32 arrays shaped (batch, height, width, channels) with values in [0, 1]; masks
are (batch, height, width). Resizing follows ``torch.nn.functional.interpolate`` (no
antialiasing, ``align_corners=False``) for nearest-exact, bilinear, bicubic and area, and
ComfyUI's own PIL path for lanczos, so results match the real server up to float rounding.
"""

from __future__ import annotations

import struct
import threading
import zlib

import numpy as np
from PIL import Image

_scratch = threading.local()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """ComfyUI's save conversion: ``clip(255 * x, 0, 255).astype(uint8)`` (truncates).

    Computed in a reused float32 buffer (fresh multi-MB temporaries cost more in page faults
    than in arithmetic), and once per distinct pixel for a constant (broadcast) image."""
    if image.ndim >= 2 and all(st == 0 for st in image.strides[:-1]):
        # a constant image (EmptyImage): convert one pixel, keep it a broadcast view
        pixel = np.clip(np.float32(255.0) * image.reshape(-1, image.shape[-1])[:1], 0, 255)
        return np.broadcast_to(pixel.astype(np.uint8)[0], image.shape)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < image.size:
        buf = _scratch.buf = np.empty(max(image.size, 1 << 20), dtype=np.float32)
    tmp = buf[: image.size].reshape(image.shape)
    np.multiply(image, np.float32(255.0), out=tmp, dtype=np.float32)
    np.clip(tmp, 0, 255, out=tmp)
    return tmp.astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(
    pixels: np.ndarray, compress_level: int, text: dict[str, str] | None = None
) -> bytes:
    """A PNG of an (H, W, 3|4) uint8 array: filter type 0 rows, zlib at ``compress_level``,
    text entries as tEXt (latin-1) or iTXt chunks, like PngInfo.add_text. Much faster than
    Pillow's adaptive filtering for the flat images tests use; any PNG reader decodes it."""
    h, w, c = pixels.shape
    color_type = {3: 2, 4: 6}[c]
    if pixels.strides[0] == 0 and pixels.strides[1] == 0:  # constant image: repeat one row
        raw = (b"\0" + pixels[0, 0].tobytes() * w) * h
    else:
        rows = np.empty((h, 1 + w * c), dtype=np.uint8)
        rows[:, 0] = 0
        rows[:, 1:] = pixels.reshape(h, w * c)
        raw = rows.tobytes()
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)),
    ]
    for key, value in (text or {}).items():
        try:
            parts.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
        except UnicodeEncodeError:
            data = key.encode("latin-1", "replace") + b"\0\0\0\0\0" + value.encode("utf-8")
            parts.append(_chunk(b"iTXt", data))
    parts.append(_chunk(b"IDAT", zlib.compress(raw, compress_level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def from_uint8(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(255.0)


def _taps(in_size: int, out_size: int, method: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(source indices, weights) pairs along one axis; out[i] = sum_k w_k[i] * in[idx_k[i]]."""
    scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    if method == "nearest-exact":
        idx = np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), in_size - 1)
        return [(idx, np.ones(out_size, dtype=np.float32))]
    if method == "nearest":
        idx = np.minimum(np.floor(dst * scale).astype(np.int64), in_size - 1)
        return [(idx, np.ones(out_size, dtype=np.float32))]
    if method == "bilinear":
        src = np.maximum(scale * (dst + 0.5) - 0.5, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i0 = np.minimum(i0, in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        l1 = (src - i0).astype(np.float32)
        return [(i0, (1.0 - l1).astype(np.float32)), (i1, l1)]
    if method == "bicubic":
        a = -0.75
        src = scale * (dst + 0.5) - 0.5
        i = np.floor(src).astype(np.int64)
        t = src - i

        def near(x):  # |x| <= 1
            return ((a + 2) * x - (a + 3)) * x * x + 1

        def far(x):  # 1 < |x| < 2
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

        weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
        return [
            (np.clip(i + k - 1, 0, in_size - 1), w.astype(np.float32))
            for k, w in enumerate(weights)
        ]
    raise ValueError(f"unsupported method {method}")


def _resize_axis(x: np.ndarray, axis: int, out_size: int, method: str) -> np.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size and method != "area":
        return x
    if method == "area":
        # adaptive average pooling: window [floor(i*in/out), ceil((i+1)*in/out))
        starts = [(i * in_size) // out_size for i in range(out_size)]
        ends = [((i + 1) * in_size + out_size - 1) // out_size for i in range(out_size)]
        csum = np.cumsum(x, axis=axis, dtype=np.float64)
        zero_shape = list(x.shape)
        zero_shape[axis] = 1
        csum = np.concatenate([np.zeros(zero_shape), csum], axis=axis)
        s = np.take(csum, starts, axis=axis)
        e = np.take(csum, ends, axis=axis)
        counts = np.asarray([b - a for a, b in zip(starts, ends, strict=True)], dtype=np.float64)
        shape = [1] * x.ndim
        shape[axis] = out_size
        return ((e - s) / counts.reshape(shape)).astype(np.float32)
    out = None
    shape = [1] * x.ndim
    shape[axis] = out_size
    for idx, w in _taps(in_size, out_size, method):
        term = np.take(x, idx, axis=axis) * w.reshape(shape)
        out = term if out is None else out + term
    assert out is not None
    return out.astype(np.float32, copy=False)


def _lanczos(images: np.ndarray, width: int, height: int) -> np.ndarray:
    out = []
    for img in images:
        pil = Image.fromarray(to_uint8(img))
        out.append(from_uint8(np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS))))
    return np.stack(out)


def common_upscale(
    images: np.ndarray, width: int, height: int, method: str, crop: str
) -> np.ndarray:
    """ComfyUI's comfy.utils.common_upscale for (B, H, W, C) images."""
    x = images
    if crop == "center":
        old_h, old_w = x.shape[1], x.shape[2]
        old_aspect = old_w / old_h
        new_aspect = width / height
        cx = cy = 0
        if old_aspect > new_aspect:
            cx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            cy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        x = x[:, cy : old_h - cy, cx : old_w - cx, :]
    if method == "lanczos":
        return _lanczos(x, width, height)
    if method == "bislerp":
        method = "bilinear"  # close enough for a test server; ComfyUI's slerp variant
    x = _resize_axis(x, 1, height, method)
    x = _resize_axis(x, 2, width, method)
    return np.ascontiguousarray(x, dtype=np.float32)


def scale_keep_aspect(h: int, w: int, width: int, height: int) -> tuple[int, int]:
    """ImageScale's handling of a 0 width or height."""
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    return width, height
