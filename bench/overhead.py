"""What does comfyfleet's pipeline cost on top of talking to ComfyUI directly?

    python bench/overhead.py [--comfy URL] [-n N] [--burst B] [--mode remote|local|both]

Runs two workloads N times each, through `execute()` and through a bare-protocol client,
interleaved (alternating who goes first) so both see the same server state:

* W1: EmptyImage 512² → SaveImage, a fresh colour every run so ComfyUI's cache never hits;
* W2: upload a 64x48 PNG (fresh pixels every run) → LoadImage → ImageInvert → SaveImage.

Both return the outputs as base64. Then B rounds of a burst of 20 concurrent jobs (10 W1 +
10 W2) each way. Prints medians, p95 and ``ratio W1|W2|burst <comfyfleet/bare>``.

The bare client is the least a correct client does: one persistent websocket, keep-alive HTTP,
its own prompt_id, POST /prompt, wait for ``executing {node: null}``, GET /history, GET /view,
base64 (and a unique upload name per job, without which concurrent jobs read each other's
inputs). comfyfleet additionally decodes and verifies the base64 input, renders, injects and
validates the graph, and cleans up inside the timed call: it deletes the history entry, and in
``local`` mode also the job's input and output files.

Modes: ``remote`` (the ``ratio`` lines) gives comfyfleet only ComfyUI's URL, so it uses the same
transport as the bare client (upload, /view). ``local`` (the ``local ratio`` lines) also gives
it ComfyUI's folders, as the RunPod worker has them: inputs are written and fsynced, outputs
read from disk, and both deleted. By default the target is a test server started in a child
process, so its CPU work does not share the event loop being measured, with its folders on
/dev/shm (a RAM disk, as on the worker) when there is one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from comfyfleet.comfy import Client
from comfyfleet.config import Settings
from comfyfleet.execute import execute
from comfyfleet.jobs import InputImage, JobSpec
from comfyfleet.outputs.inline import InlineSink

BURST = 20
# The server's folders live on a RAM disk when there is one, as on the RunPod worker.
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
    color = tuple(random.randrange(256) for _ in range(3))
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return buf.getvalue()


class BareClient:
    """A minimal, correct ComfyUI client (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = uuid.uuid4().hex
        self.done: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()
        ws_url = "ws" + self.url[4:] + f"/ws?clientId={self.client_id}"
        self.ws = await self.session.ws_connect(ws_url)
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

    async def run(self, graph: dict[str, Any], upload: tuple[str, bytes] | None) -> list[str]:
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
        encoded = []
        for node in outputs.values():
            for image in node.get("images", []):
                async with self.session.get(self.url + "/view", params=image) as resp:
                    encoded.append(base64.b64encode(await resp.read()).decode())
        return encoded


class Bench:
    def __init__(self, url: str, dirs: dict[str, Path]) -> None:
        self.url = url
        self.dirs = dirs
        self.settings = Settings()
        self.fleet = Client(url)
        self.bare = BareClient(url)

    async def __aenter__(self) -> Bench:
        await self.fleet.__aenter__()
        await self.fleet.wait_ready(30)
        await self.bare.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bare.close()
        await self.fleet.close()

    def job(self, who: str, workload: str) -> Callable[[], Awaitable[object]]:
        """A ready-to-time call; inputs are made beforehand so both sides time the same work."""
        if workload == "W1":
            graph = w1()
            if who == "bare":
                return lambda: self.bare.run(graph, None)
            return lambda: self._execute(JobSpec(workflow=graph))
        data = fresh_png()
        if who == "bare":
            name = f"bare_{uuid.uuid4().hex}.png"
            return lambda: self.bare.run(w2(name), (name, data))
        image = InputImage(name="input.png", image=base64.b64encode(data).decode())
        return lambda: self._execute(JobSpec(workflow=w2("input.png"), images=[image]))

    async def _execute(self, spec: JobSpec) -> object:
        result = await execute(spec, self.fleet, InlineSink(), settings=self.settings, **self.dirs)
        assert result.artifacts and result.artifacts[0].data
        return result

    async def timed(self, call: Callable[[], Awaitable[object]]) -> float:
        start = time.perf_counter()
        await call()
        return time.perf_counter() - start

    async def burst(self, who: str) -> float:
        calls = [self.job(who, "W1" if i % 2 else "W2") for i in range(BURST)]
        start = time.perf_counter()
        await asyncio.gather(*(call() for call in calls))
        return time.perf_counter() - start


async def run(url: str, n: int, bursts: int, dirs: dict[str, Path]) -> dict[str, Any]:
    samples: dict[tuple[str, str], list[float]] = {}
    async with Bench(url, dirs) as bench:
        for workload in ("W1", "W2"):  # warm up: connections, websocket, object_info
            for who in ("fleet", "bare"):
                for _ in range(3):
                    await bench.job(who, workload)()
        for i in range(n):
            order = ("fleet", "bare") if i % 2 else ("bare", "fleet")
            for workload in ("W1", "W2"):
                for who in order:
                    t = await bench.timed(bench.job(who, workload))
                    samples.setdefault((who, workload), []).append(t)
        for i in range(bursts):
            for who in ("fleet", "bare") if i % 2 else ("bare", "fleet"):
                samples.setdefault((who, "burst"), []).append(await bench.burst(who))
    return samples


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def report(samples: dict[tuple[str, str], list[float]], label: str) -> dict[str, float]:
    ratios: dict[str, float] = {}
    print(f"{label:10}{'comfyfleet':>24}{'bare':>24}")
    print(f"{'':10}{'median':>12}{'p95':>12}{'median':>12}{'p95':>12}   (ms)")
    for workload in ("W1", "W2", "burst"):
        fleet, bare = samples[("fleet", workload)], samples[("bare", workload)]
        row = [statistics.median(fleet), p95(fleet), statistics.median(bare), p95(bare)]
        print(f"{workload:10}" + "".join(f"{v * 1000:12.2f}" for v in row))
        ratios[workload] = statistics.median(fleet) / statistics.median(bare)
    prefix = "" if label == "remote" else f"{label} "
    for workload, ratio in ratios.items():
        print(f"{prefix}ratio {workload} {ratio:.3f}")
    return ratios


async def measure(url: str, n: int, bursts: int, mode: str, dirs: dict[str, Path]) -> None:
    for label in ("remote", "local") if mode == "both" else (mode,):
        if label == "local" and not dirs:
            print("local mode needs the server's folders (not with --comfy)", file=sys.stderr)
            continue
        report(await run(url, n, bursts, dirs if label == "local" else {}), label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfy", help="a running ComfyUI (default: start a test server)")
    parser.add_argument("-n", type=int, default=100, help="runs per workload and side")
    parser.add_argument("--burst", type=int, default=8, help="bursts of 20 per side")
    parser.add_argument("--mode", choices=["remote", "local", "both"], default="remote")
    parser.add_argument(
        "--in-process", action="store_true", help="run the test server in this event loop"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.comfy:
        asyncio.run(measure(args.comfy, args.n, args.burst, args.mode, {}))
    elif args.in_process:
        asyncio.run(_in_process(args))
    else:
        from comfyfleet.testing import ComfyTestServer

        with tempfile.TemporaryDirectory(dir=RAM_DISK) as root:
            proc = ComfyTestServer.start_subprocess(root=root)
            dirs = {"input_dir": proc.input_dir, "output_dir": proc.output_dir}
            try:
                asyncio.run(measure(proc.url, args.n, args.burst, args.mode, dirs))
            finally:
                proc.process.terminate()
                proc.process.wait(10)
    print(f"total {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


async def _in_process(args: argparse.Namespace) -> None:
    from comfyfleet.testing import ComfyTestServer

    with tempfile.TemporaryDirectory(dir=RAM_DISK) as root:
        async with ComfyTestServer(root=root) as srv:
            dirs = {"input_dir": srv.input_dir, "output_dir": srv.output_dir}
            await measure(srv.url, args.n, args.burst, args.mode, dirs)


if __name__ == "__main__":
    sys.exit(main())
