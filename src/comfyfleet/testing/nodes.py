"""The node classes the test server really executes (Pillow + numpy, ComfyUI's arithmetic).

Implemented ComfyUI classes: EmptyImage, LoadImage, ImageInvert, ImageScale, ImageScaleBy,
ImageToMask, MaskToImage, SaveImage, PreviewImage, SaveAnimatedWEBP, SaveAnimatedPNG.
Every other class of ComfyUI's object_info validates normally and, when executed, fails with an
``execution_error`` (``NotImplementedError`` naming the class).

Test-only classes (NOT part of ComfyUI; they appear in this server's object_info under the
category ``_for_testing/comfyfleet``):

* ``FleetTestSlow``: passes an image through in ``steps`` steps of ``seconds_per_step`` each,
  sending a ``progress`` message per step like a sampler (an interrupt takes effect at the next
  step; previews are sent when the prompt's ``extra_data.preview_method`` asks for them).
* ``FleetTestFail``: raises ``RuntimeError(message)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from comfyfleet.testing import imageops

TEST_CATEGORY = "_for_testing/comfyfleet"


class NodeContext(Protocol):
    """What the executor gives a running node."""

    folders: Any
    prompt_id: str
    node_id: str
    png_compress_level: int
    preview_enabled: bool

    def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None: ...

    def wait(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class NodeImpl:
    fn: Callable[..., Any]
    is_changed: Callable[..., Any] | None = None
    hidden: dict[str, str] = field(default_factory=dict)  # kwarg -> PROMPT/EXTRA_PNGINFO/...


# -- helpers ---------------------------------------------------------------------------------


def save_image_path(
    filename_prefix: str, output_dir: Path, image_width: int = 0, image_height: int = 0
) -> tuple[str, str, int, str, str]:
    """folder_paths.get_save_image_path: (folder, filename, next counter, subfolder, prefix).

    The counter is one past the highest ``<prefix>_<NNNNN>_`` already in the folder, so it
    re-lists the output (sub)folder on every save, as ComfyUI does."""
    if "%" in filename_prefix:
        import time

        now = time.localtime()
        for var, val in (
            ("%width%", str(image_width)),
            ("%height%", str(image_height)),
            ("%year%", str(now.tm_year)),
            ("%month%", str(now.tm_mon).zfill(2)),
            ("%day%", str(now.tm_mday).zfill(2)),
            ("%hour%", str(now.tm_hour).zfill(2)),
            ("%minute%", str(now.tm_min).zfill(2)),
            ("%second%", str(now.tm_sec).zfill(2)),
        ):
            filename_prefix = filename_prefix.replace(var, val)

    out = str(output_dir)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(out, subfolder)
    if os.path.commonpath((out, os.path.abspath(full_output_folder))) != out:
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            + "\n full_output_folder: "
            + os.path.abspath(full_output_folder)
            + "\n         output_dir: "
            + out
            + "\n         commonpath: "
            + os.path.commonpath((out, os.path.abspath(full_output_folder)))
        )

    prefix_len = len(os.path.basename(filename_prefix))

    def numbered(name: str) -> tuple[int, str]:
        prefix = name[: prefix_len + 1]
        try:
            digits = int(name[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        return digits, prefix

    try:
        counter = (
            max(
                (d, p)
                for d, p in map(numbered, os.listdir(full_output_folder))
                if os.path.normcase(p[:-1]) == os.path.normcase(filename) and p[-1:] == "_"
            )[0]
            + 1
        )
    except ValueError:
        counter = 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix


def _png_text(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """SaveImage's PNG text chunks: "prompt" and each extra_pnginfo key, JSON-encoded."""
    text: dict[str, str] = {}
    if prompt is not None:
        text["prompt"] = json.dumps(prompt)
    if extra_pnginfo is not None:
        for key in extra_pnginfo:
            text[key] = json.dumps(extra_pnginfo[key])
    return text


def _result(filename: str, subfolder: str, type_: str) -> dict[str, str]:
    return {"filename": filename, "subfolder": subfolder, "type": type_}


def _check_image(value: Any, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 4:
        raise TypeError(f"{name}: expected an IMAGE (batch, height, width, channels)")
    return value


# -- ComfyUI nodes ---------------------------------------------------------------------------


def empty_image(ctx, width, height, batch_size=1, color=0):
    rgb = np.array(
        [((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF],
        dtype=np.float32,
    )
    # A read-only broadcast view: no memory per pixel (nodes never write into their inputs).
    return (np.broadcast_to(rgb, (batch_size, height, width, 3)),)


def load_image(ctx, image):
    path = ctx.folders.annotated(image)
    # FileNotFoundError "[Errno 2] No such file or directory: ..." when it is gone, as ComfyUI
    with Image.open(path) as img:
        images, masks = [], []
        w = h = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda i: i * (1 / 255))
            rgb = frame.convert("RGB")
            if not images:
                w, h = rgb.size
            if rgb.size != (w, h):
                continue
            images.append(np.asarray(rgb).astype(np.float32) / np.float32(255.0))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A")).astype(np.float32)
                mask = np.float32(1.0) - alpha / np.float32(255.0)
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.asarray(frame.convert("RGBA").getchannel("A")).astype(np.float32)
                mask = np.float32(1.0) - alpha / np.float32(255.0)
            else:
                mask = np.zeros((64, 64), dtype=np.float32)
            masks.append(mask)
            if img.format == "MPO":
                break
    return (np.stack(images), np.stack(masks))


def load_image_changed(ctx, image):
    with open(ctx.folders.annotated(image), "rb") as f:
        return hashlib.sha256(f.read()).digest().hex()


def image_invert(ctx, image):
    return (np.float32(1.0) - _check_image(image, "image"),)


def image_scale(ctx, image, upscale_method, width, height, crop):
    if width == 0 and height == 0:
        return (image,)
    width, height = imageops.scale_keep_aspect(image.shape[1], image.shape[2], width, height)
    return (imageops.common_upscale(image, width, height, upscale_method, crop),)


def image_scale_by(ctx, image, upscale_method, scale_by):
    width = round(image.shape[2] * scale_by)
    height = round(image.shape[1] * scale_by)
    return (imageops.common_upscale(image, width, height, upscale_method, "disabled"),)


def image_to_mask(ctx, image, channel):
    index = ["red", "green", "blue", "alpha"].index(channel)
    if index >= image.shape[3]:  # torch's wording (the real server is torch-based)
        raise IndexError(
            f"index {index} is out of bounds for dimension 3 with size {image.shape[3]}"
        )
    return (np.ascontiguousarray(image[:, :, :, index]),)


def mask_to_image(ctx, mask):
    m = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))[..., None]
    return (np.ascontiguousarray(np.broadcast_to(m, (*m.shape[:3], 3))),)


def _save(ctx, images, filename_prefix, prompt, extra_pnginfo, *, type_, out_dir, compress):
    _check_image(images, "images")
    folder, filename, counter, subfolder, _ = save_image_path(
        filename_prefix, out_dir, images[0].shape[1], images[0].shape[0]
    )
    text = _png_text(prompt, extra_pnginfo)
    results = []
    for batch_number, image in enumerate(images):
        pixels = imageops.to_uint8(image)
        file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        path = os.path.join(folder, file)
        if pixels.ndim == 3 and pixels.shape[2] in (3, 4):  # our fast encoder
            with open(path, "wb") as f:
                f.write(imageops.encode_png(pixels, compress, text))
        else:
            info = PngInfo()
            for key, value in text.items():
                info.add_text(key, value)
            Image.fromarray(np.ascontiguousarray(pixels).squeeze(-1)).save(
                path, pnginfo=info, compress_level=compress
            )
        results.append(_result(file, subfolder, type_))
        counter += 1
    return {"ui": {"images": results}}


def save_image(ctx, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
    return _save(
        ctx,
        images,
        filename_prefix,
        prompt,
        extra_pnginfo,
        type_="output",
        out_dir=ctx.folders.output,
        compress=ctx.png_compress_level,
    )


def preview_image(ctx, images, prompt=None, extra_pnginfo=None):
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    return _save(
        ctx,
        images,
        "ComfyUI" + "_temp_" + suffix,
        prompt,
        extra_pnginfo,
        type_="temp",
        out_dir=ctx.folders.temp,
        compress=1,
    )


def _animated_ui(result: dict[str, str], frames: int) -> dict[str, Any]:
    ui: dict[str, Any] = {"images": [result]}
    if frames > 1:
        ui["animated"] = [True]
    return {"ui": ui}


def save_animated_webp(
    ctx, images, filename_prefix, fps, lossless, quality, method, prompt=None, extra_pnginfo=None
):
    folder, filename, counter, subfolder, _ = save_image_path(
        filename_prefix, ctx.folders.output, images[0].shape[1], images[0].shape[0]
    )
    frames = [Image.fromarray(imageops.to_uint8(img)) for img in images]
    exif = frames[0].getexif()
    if prompt is not None:
        exif[0x0110] = f"prompt:{json.dumps(prompt)}"
    if extra_pnginfo is not None:
        tag = 0x010F
        for key, value in extra_pnginfo.items():
            exif[tag] = f"{key}:{json.dumps(value)}"
            tag -= 1
    file = f"{filename}_{counter:05}_.webp"
    frames[0].save(
        os.path.join(folder, file),
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        exif=exif,
        lossless=lossless,
        quality=quality,
        method={"default": 4, "fastest": 0, "slowest": 6}.get(method),
    )
    return _animated_ui(_result(file, subfolder, "output"), len(images))


def save_animated_png(
    ctx, images, filename_prefix, fps, compress_level, prompt=None, extra_pnginfo=None
):
    folder, filename, counter, subfolder, _ = save_image_path(
        filename_prefix, ctx.folders.output, images[0].shape[1], images[0].shape[0]
    )
    frames = [Image.fromarray(imageops.to_uint8(img)) for img in images]
    metadata = PngInfo()
    if prompt is not None:
        metadata.add(b"comf", b"prompt\0" + json.dumps(prompt).encode("latin-1"), after_idat=True)
    for key, value in (extra_pnginfo or {}).items():
        metadata.add(
            b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"), True
        )
    file = f"{filename}_{counter:05}_.png"
    frames[0].save(
        os.path.join(folder, file),
        pnginfo=metadata,
        compress_level=compress_level,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
    )
    return _animated_ui(_result(file, subfolder, "output"), len(images))


# -- test-only nodes -------------------------------------------------------------------------


def _preview_of(image: np.ndarray) -> Image.Image:
    pil = Image.fromarray(imageops.to_uint8(image[0][..., :3]))
    pil.thumbnail((512, 512))
    return pil


def fleet_test_slow(ctx, image, steps, seconds_per_step, seed=0):
    for step in range(1, steps + 1):
        ctx.wait(seconds_per_step)
        preview = _preview_of(image) if ctx.preview_enabled else None
        ctx.progress(step, steps, preview)
    return (image,)


def fleet_test_fail(ctx, image, message="FleetTestFail failed on purpose"):
    raise RuntimeError(message)


_PNG_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODES: dict[str, NodeImpl] = {
    "EmptyImage": NodeImpl(empty_image),
    "LoadImage": NodeImpl(load_image, is_changed=load_image_changed),
    "ImageInvert": NodeImpl(image_invert),
    "ImageScale": NodeImpl(image_scale),
    "ImageScaleBy": NodeImpl(image_scale_by),
    "ImageToMask": NodeImpl(image_to_mask),
    "MaskToImage": NodeImpl(mask_to_image),
    "SaveImage": NodeImpl(save_image, hidden=_PNG_HIDDEN),
    "PreviewImage": NodeImpl(preview_image, hidden=_PNG_HIDDEN),
    "SaveAnimatedWEBP": NodeImpl(save_animated_webp, hidden=_PNG_HIDDEN),
    "SaveAnimatedPNG": NodeImpl(save_animated_png, hidden=_PNG_HIDDEN),
    "FleetTestSlow": NodeImpl(fleet_test_slow),
    "FleetTestFail": NodeImpl(fleet_test_fail),
}


def _test_class(
    name: str,
    display: str,
    description: str,
    required: dict[str, Any],
    optional: dict[str, Any] | None = None,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {"required": required}
    order: dict[str, Any] = {"required": list(required)}
    if optional:
        inputs["optional"] = optional
        order["optional"] = list(optional)
    return {
        "input": inputs,
        "input_order": order,
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": name,
        "display_name": display,
        "description": description,
        "python_module": "comfyfleet.testing",
        "category": TEST_CATEGORY,
        "output_node": False,
    }


TEST_CLASSES: dict[str, dict[str, Any]] = {
    "FleetTestSlow": _test_class(
        "FleetTestSlow",
        "Fleet Test Slow (comfyfleet test server only)",
        "NOT a ComfyUI node: passes the image through in `steps` steps of `seconds_per_step`, "
        "sending a progress message per step like a sampler.",
        {
            "image": ["IMAGE", {}],
            "steps": ["INT", {"default": 5, "min": 1, "max": 100000}],
            "seconds_per_step": [
                "FLOAT",
                {"default": 0.1, "min": 0.0, "max": 3600.0, "step": 0.001},
            ],
        },
        {
            "seed": [
                "INT",
                {
                    "default": 0,
                    "min": 0,
                    "max": 0xFFFFFFFFFFFFFFFF,
                    "tooltip": "ignored; change it to defeat the output cache",
                },
            ]
        },
    ),
    "FleetTestFail": _test_class(
        "FleetTestFail",
        "Fleet Test Fail (comfyfleet test server only)",
        "NOT a ComfyUI node: raises RuntimeError(message) when executed.",
        {
            "image": ["IMAGE", {}],
            "message": [
                "STRING",
                {"default": "FleetTestFail failed on purpose", "multiline": False},
            ],
        },
    ),
}
