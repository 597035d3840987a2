"""Does a long gateway run leave anything in ComfyUI's folders?

    python bench/cleanup.py [-n 1000] [-c 20]

Starts the ComfyUI test server and ``comfyfleet serve --comfy URL`` as child processes (no
folder settings: the gateway learns the server's folders from ``GET /internal/folder_paths``)
and runs N tasks through the HTTP API, ``-c`` at a time, a mix of: W2 (LoadImage -> ImageInvert
-> SaveImage, with an input image), W1 (EmptyImage -> SaveImage), failing jobs with an image
that save one output before their node fails, jobs cancelled right after submit (queued or
running), and jobs past a 0.2 s deadline. Then prints what is left in the server's input and
output folders (the Done-when figure: 0) and the gateway's ``files_left``; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from comfyfleet.testing import ComfyTestServer


def png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMAGE = [{"name": "in.png", "image": png()}]


def body(kind: str) -> dict[str, Any]:
    load = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    empty = {
        "class_type": "EmptyImage",
        "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0},
    }
    if kind == "w1":
        return {"workflow": {"1": empty, "2": save(["1", 0])}}
    if kind == "fail":
        fail = {"class_type": "FleetTestFail", "inputs": {"image": ["2", 0], "message": "no"}}
        slow = slow_node(2)
        graph = {"1": load, "2": slow, "3": fail, "4": save(["3", 0]), "5": save(["1", 0])}
        return {"workflow": graph, "images": IMAGE}
    if kind == "late":
        graph = {"1": load, "2": slow_node(100), "3": save(["2", 0])}
        return {"workflow": graph, "images": IMAGE, "timeout": 0.2, "max_attempts": 1}
    invert = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    return {"workflow": {"1": load, "2": invert, "3": save(["2", 0])}, "images": IMAGE}


def save(image: list[Any]) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": image, "filename_prefix": "b"}}


def slow_node(steps: int) -> dict[str, Any]:
    return {
        "class_type": "FleetTestSlow",
        "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": 0.02},
    }


MIX = ["w2"] * 10 + ["w1"] * 6 + ["fail"] * 2 + ["cancel", "late"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(root: Path, comfy: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "comfyfleet.cli", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(root / "gateway"), "--comfy", f"comfy={comfy}"]
    env = {**os.environ, "COMFYFLEET_LOG_LEVEL": "INFO", "COMFYFLEET_API_KEYS": "[]"}
    log = (root / "gateway.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a child process: wait until its backend is idle
        if proc.poll() is not None:
            raise SystemExit((root / "gateway.log").read_text()[-3000:])
        try:
            backends = httpx.get(url + "/api/v1/backends", timeout=1).json()
            if backends and all(b["state"] == "idle" for b in backends):
                return proc, url
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit("the gateway did not start:\n" + (root / "gateway.log").read_text()[-3000:])


async def one(http: httpx.AsyncClient, kind: str) -> str:
    resp = await http.post("/api/v1/tasks", json=body("w2" if kind == "cancel" else kind))
    resp.raise_for_status()
    task_id = resp.json()["id"]
    if kind == "cancel":
        await http.post(f"/api/v1/tasks/{task_id}/cancel")
    while True:
        task = (await http.get(f"/api/v1/tasks/{task_id}", params={"wait": 60})).json()
        if task["status"] in ("succeeded", "failed", "cancelled"):
            return f"{kind}:{task['status']}"


def left(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="comfyfleet-bench-cleanup-"))
    comfy = ComfyTestServer.start_subprocess(root=root / "comfy", cache="none")
    gateway, url = start_gateway(root, comfy.url)
    try:
        sem = asyncio.Semaphore(args.concurrency)

        async def limited(i: int) -> str:
            async with sem:
                return await one(http, MIX[i % len(MIX)])

        t0 = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            outcomes = Counter(await asyncio.gather(*(limited(i) for i in range(args.jobs))))
            backend = (await http.get("/api/v1/metrics")).json()["backends"][0]
        elapsed = time.monotonic() - t0
    finally:
        gateway.terminate()
        gateway.wait(30)
    inputs, outputs = left(comfy.input_dir), left(comfy.output_dir)
    comfy.stop()
    notes = [
        line
        for line in (root / "gateway.log").read_text().splitlines()
        if "ComfyUI's folders" in line or "folder is unknown" in line
    ]
    print(
        f"{args.jobs} jobs through the gateway in {elapsed:.1f} s: {dict(sorted(outcomes.items()))}"
    )
    print(f"gateway: {notes[0].split(': ', 1)[-1] if notes else 'no note about folders'}")
    print(f"folders: {backend.get('folders')}")
    print(f"files_left (metrics): {backend.get('files_left')}")
    print(f"left in the test server's input folder:  {len(inputs)} {inputs[:5]}")
    print(f"left in the test server's output folder: {len(outputs)} {outputs[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--jobs", type=int, default=1000)
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
