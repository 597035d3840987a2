"""How long `comfyfleet paths` takes on a volume with many model files (target: < 1 s).

Builds a fake volume (``--files`` empty model files spread over every known folder and some
sub-folders), then times detection + extra_model_paths.yaml + --create + symlink mode, cold
and warm, next to a full file walk for scale. Prints figures; asserts nothing.

    python bench/paths.py [--files 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from comfyfleet.models.folders import ALL_FOLDERS
from comfyfleet.models.paths import generate
from comfyfleet.models.volumes import detect_roots


def build_volume(base: Path, files: int) -> Path:
    models = base / "runpod-volume/comfyui/models"
    dirs = [models / d[0] for d in ALL_FOLDERS.values()]
    dirs += [models / "loras" / f"style{i}" for i in range(20)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (dirs[i % len(dirs)] / f"model_{i:05d}.safetensors").touch()
    return models


def once(base: Path, comfy: Path) -> float:
    start = time.perf_counter()
    found = detect_roots(bases=[base / "runpod-volume", base / "workspace"])
    generate(
        found.roots,
        write=comfy / "extra_model_paths.yaml",
        create=True,
        symlink_into=comfy / "models",
    )
    return time.perf_counter() - start


def walk(models: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = sum(len(files) for _, _, files in os.walk(models))
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        models = build_volume(base, args.files)
        print(
            f"volume: {args.files} files in {len(ALL_FOLDERS) + 20} folders "
            f"(built in {time.perf_counter() - t0:.2f} s)"
        )
        comfy = base / "comfyui"
        first = once(base, comfy)
        runs = [once(base, comfy) for _ in range(args.repeat)]
        walked, counted = walk(models)
        median = statistics.median(runs)
        print(f"paths, first run (creates folders, links): {first * 1000:8.2f} ms")
        print(f"paths, re-run median of {args.repeat} (idempotent):   {median * 1000:8.2f} ms")
        print(f"full os.walk of the volume ({counted} files):  {walked * 1000:8.2f} ms")
        print(
            f"walk / paths ratio: {walked / median:.1f}x   target < 1000 ms: "
            f"{'met' if max(first, *runs) < 1 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
