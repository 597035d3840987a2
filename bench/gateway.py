"""Is the gateway as fast as talking to ComfyUI directly?

    python bench/gateway.py [-n 30] [--bursts 6] [--node-delay 0.006] [--soak 5000]

Starts the ComfyUI test server (``python -m comfyfleet.testing``, a child process, folders on a
RAM disk when there is one) and the gateway in front of it (``comfyfleet serve``, a child
process, SQLite, one local backend, default settings). Then, in the same run and in rotated
order, times the same jobs two ways:

* **bare**: the least a correct client does -- one persistent websocket, keep-alive HTTP,
  upload, ``POST /prompt`` (own prompt_id), wait for ``executing {node: null}``,
  ``GET /history``, ``GET /view``;
* **gateway**: ``POST /api/v1/tasks?wait=60`` and ``GET`` of the artifact URL in the answer --
  everything a user of the gateway does to get the bytes -- with the same client library
  as the bare side (aiohttp, keep-alive connections).

Workloads: W1 = EmptyImage 512² → SaveImage (a fresh colour every job), W2 = LoadImage of a
fresh 64x48 PNG sent with the job → ImageInvert → SaveImage, and a burst of 20 jobs sent at
once (10 W1 + 10 W2). Every node the test server executes also sleeps ``--node-delay`` seconds
(its ``node_delay`` fault knob, the same for both paths), so a job costs ComfyUI about what a
small real job does rather than the test server's ~1 ms. Prints medians and
``ratio W1|W2|burst <gateway/bare>`` (goal: W1, W2 <= 1.10, burst <= 1.00).

``--soak N`` then runs N W2 jobs through the gateway one after another and compares the median
latency of the last 100 with the first 100 (goal: within 10 %), also relative to bare W2 jobs
run alongside those 100s (the machine's load may change during a long run), and counts the
files left in the test server's input and output folders (the bare client's are removed by
the harness, untimed, so what is left is the gateway's).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from PIL import Image

from comfyfleet.testing import ComfyTestProcess, ComfyTestServer

BURST = 20
RAM_DISK = "/dev/shm" if Path("/dev/shm").is_dir() else None


def w1() -> dict[str, Any]:
    color = random.randrange(2**24)
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "w1"}},
    }


def w2(name: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "w2"}},
    }


def fresh_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), tuple(random.randrange(256) for _ in range(3))).save(buf, "PNG")
    return buf.getvalue()


class Bare:
    """A minimal, correct ComfyUI client (see the module docstring). It leaves its files in
    ComfyUI's folders, as such a client does; ``root`` (the test server's) lets the harness
    remove them outside the timed part, so they slow neither side's later jobs."""

    def __init__(self, url: str, root: Path | None = None) -> None:
        self.url = url
        self.root = root
        self.client_id = uuid.uuid4().hex
        self.done: dict[str, asyncio.Future[None]] = {}
        self.left: list[Path] = []

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        ws_url = "ws" + self.url[4:] + f"/ws?clientId={self.client_id}"
        self.ws = await self.session.ws_connect(ws_url, max_msg_size=0)
        self.reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()
        await self.session.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                data = event["data"]
                if event["type"] == "executing" and data.get("node") is None:
                    future = self.done.pop(data.get("prompt_id"), None)
                    if future is not None:
                        future.set_result(None)

    def job(self, workload: str) -> Callable[[], Awaitable[list[bytes]]]:
        if workload == "W1":
            graph = w1()
            return lambda: self.run(graph, None)
        name = f"bare_{uuid.uuid4().hex}.png"
        data = fresh_png()
        return lambda: self.run(w2(name), (name, data))

    async def run(self, graph: dict[str, Any], upload: tuple[str, bytes] | None) -> list[bytes]:
        if upload is not None:
            form = aiohttp.FormData()
            form.add_field("image", upload[1], filename=upload[0])
            form.add_field("overwrite", "true")
            async with self.session.post(self.url + "/upload/image", data=form) as resp:
                resp.raise_for_status()
        prompt_id = str(uuid.uuid4())
        done = self.done[prompt_id] = asyncio.get_running_loop().create_future()
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        async with self.session.post(self.url + "/prompt", json=body) as resp:
            resp.raise_for_status()
        await done
        async with self.session.get(f"{self.url}/history/{prompt_id}") as resp:
            outputs = (await resp.json())[prompt_id]["outputs"]
        files = []
        for node in outputs.values():
            for image in node.get("images", []):
                async with self.session.get(self.url + "/view", params=image) as resp:
                    files.append(await resp.read())
                if self.root is not None:
                    self.left.append(self.root / "output" / image["subfolder"] / image["filename"])
        if upload is not None and self.root is not None:
            self.left.append(self.root / "input" / upload[0])
        return files

    def tidy(self) -> None:
        """Not timed: remove the files the jobs so far left in ComfyUI's folders."""
        for path in self.left:
            path.unlink(missing_ok=True)
        self.left.clear()


class Gateway:
    """The gateway's own API: submit with ``?wait``, then fetch the artifacts (aiohttp with
    keep-alive connections, the same client library as the bare side)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        await self.session.close()

    def job(self, workload: str) -> Callable[[], Awaitable[list[bytes]]]:
        if workload == "W1":
            body: dict[str, Any] = {"workflow": w1()}
        else:
            image = base64.b64encode(fresh_png()).decode()
            body = {"workflow": w2("input.png"), "images": [{"name": "input.png", "image": image}]}
        return lambda: self.run(body)

    async def run(self, body: dict[str, Any]) -> list[bytes]:
        url = self.url + "/api/v1/tasks?wait=60"
        async with self.session.post(url, json=body) as resp:
            task = await resp.json()
            status = resp.status
        if status != 200 or task.get("status") != "succeeded":
            raise SystemExit(f"gateway task did not succeed: HTTP {status} {task}")
        files = []
        for artifact in task["result"]["artifacts"]:
            async with self.session.get(artifact["url"]) as got:
                got.raise_for_status()
                files.append(await got.read())
        return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(root: Path, comfy: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "comfyfleet.cli", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(root / "gateway"), "--comfy", comfy]
    env = {**os.environ, "COMFYFLEET_LOG_LEVEL": "WARNING", "COMFYFLEET_API_KEYS": "[]"}
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


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def burst(side: Bare | Gateway) -> float:
    calls = [side.job("W1" if i % 2 else "W2") for i in range(BURST)]
    start = time.perf_counter()
    await asyncio.gather(*(call() for call in calls))
    return time.perf_counter() - start


async def compare(comfy: str, gateway_url: str, n: int, bursts: int, root: Path) -> None:
    bare, gateway = Bare(comfy, root), Gateway(gateway_url)
    await bare.start()
    await gateway.start()
    sides: dict[str, Bare | Gateway] = {"bare": bare, "gateway": gateway}
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for workload in ("W1", "W2"):  # warm up: websocket, object_info, caches
            for side in sides.values():
                for _ in range(5):
                    await side.job(workload)()
        for side in sides.values():  # and as many keep-alive connections as a burst uses
            await burst(side)
        for i in range(n):
            order = ("bare", "gateway") if i % 2 else ("gateway", "bare")
            for workload in ("W1", "W2") if i % 2 else ("W2", "W1"):
                for who in order:
                    elapsed = await timed(sides[who].job(workload))
                    samples.setdefault((who, workload), []).append(elapsed)
                    bare.tidy()
        for i in range(bursts):
            for who in ("bare", "gateway") if i % 2 else ("gateway", "bare"):
                samples.setdefault((who, "burst"), []).append(await burst(sides[who]))
                bare.tidy()
    finally:
        await bare.close()
        await gateway.close()
    print(f"{'':8}{'bare':>12}{'gateway':>12}   (median ms; n={n}, bursts of {BURST}: {bursts})")
    ratios = {}
    for workload in ("W1", "W2", "burst"):
        b = statistics.median(samples[("bare", workload)])
        g = statistics.median(samples[("gateway", workload)])
        ratios[workload] = g / b
        print(f"{workload:8}{b * 1000:12.2f}{g * 1000:12.2f}")
    for workload, ratio in ratios.items():
        goal = 1.00 if workload == "burst" else 1.10
        verdict = "ok" if ratio <= goal else "over"
        print(f"ratio {workload} {ratio:.3f}   (goal <= {goal:.2f}: {verdict})")


async def soak(comfy: str, gateway_url: str, jobs: int, proc: ComfyTestProcess) -> None:
    """``jobs`` W2 jobs through the gateway, one after another. During the first and the
    last 100 a bare W2 job runs after each (its files removed), so a change of the machine's
    load during the soak shows in both and can be told from the gateway slowing down."""
    bare, gateway = Bare(comfy, proc.root), Gateway(gateway_url)
    await bare.start()
    await gateway.start()
    latencies: list[float] = []
    baseline: dict[str, list[float]] = {"first": [], "last": []}
    started = time.perf_counter()
    try:
        for i in range(jobs):
            latencies.append(await timed(gateway.job("W2")))
            window = "first" if i < 100 else "last" if i >= jobs - 100 else None
            if window is not None:
                baseline[window].append(await timed(bare.job("W2")))
                bare.tidy()
    finally:
        await bare.close()
        await gateway.close()
    took = time.perf_counter() - started
    head, tail = statistics.median(latencies[:100]), statistics.median(latencies[-100:])
    b_head, b_tail = (statistics.median(baseline[w]) for w in ("first", "last"))
    left = {
        folder: sum(1 for p in (proc.root / folder).rglob("*") if p.is_file())
        for folder in ("input", "output")
    }
    print(f"soak: {jobs} W2 jobs through the gateway in {took:.1f}s")
    print(
        f"soak W2 median: first 100 {head * 1000:.2f} ms, last 100 {tail * 1000:.2f} ms "
        f"(bare alongside: {b_head * 1000:.2f} ms, {b_tail * 1000:.2f} ms)"
    )
    drift = (tail / b_tail) / (head / b_head)
    verdict = "ok" if drift <= 1.10 else "over"
    print(
        f"ratio soak last/first {tail / head:.3f}, relative to bare {drift:.3f}   "
        f"(goal <= 1.10: {verdict})"
    )
    print(f"files left in the test server: input {left['input']}, output {left['output']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30, help="rounds per workload and side")
    parser.add_argument("--bursts", type=int, default=6, help="bursts of 20 per side")
    parser.add_argument(
        "--node-delay", type=float, default=0.006, help="seconds every executed node sleeps"
    )
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="then N W2 jobs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=RAM_DISK, prefix="comfyfleet-bench-gw-") as tmp:
        root = Path(tmp)
        proc = ComfyTestServer.start_subprocess(
            root=root / "comfy", faults={"node_delay": args.node_delay}
        )
        gateway = None
        try:
            gateway, url = start_gateway(root, proc.url)
            print(
                f"gateway bench: test server {proc.url} (node_delay {args.node_delay * 1000:g} "
                f"ms per executed node, both paths), gateway {url} (SQLite, 1 local backend)"
            )
            asyncio.run(compare(proc.url, url, args.n, args.bursts, proc.root))
            if args.soak:
                asyncio.run(soak(proc.url, url, args.soak, proc))
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(30)
            proc.stop()
    print(f"total {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
