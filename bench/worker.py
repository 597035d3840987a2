"""What does the RunPod worker cost on top of ComfyUI itself?

    python bench/worker.py [-n N] [--big-mb MB] [--starts K] [--skip overhead,memory,startup]

Three measurements, each against the ComfyUI test server in its own process:

1. **Per-job overhead.** The same W1/W2 workloads as ``bench/overhead.py``, through
   ``comfyfleet worker --local`` (``POST /runsync`` on the runpod SDK's local API: request
   parsing, resource checks, `execute()`, response shaping, the SDK's own JSON round trip) and
   through that file's bare-protocol client, interleaved. Prints medians, p95 and the overhead.
2. **Peak memory returning a big artifact.** A ``--big-mb`` noise PNG (incompressible) is saved
   by ComfyUI and returned inline (base64 in the response) and through S3 (moto's server,
   streaming multipart). The worker's peak RSS is read from ``/proc/<pid>/status`` (VmHWM, reset
   through ``clear_refs`` before the job); growth = peak - RSS before the job. Target for S3:
   under 64 MB whatever the size.
3. **Start-up overhead.** Launch → ComfyUI answering ``/system_stats`` when ``comfyfleet worker``
   launches it from COMFYUI_DIR, minus the same for ``python main.py`` started directly (both
   polled every 2 ms); and when the worker's own API answers. Target: under 0.5 s. Also what
   the worker imports before it launches ComfyUI (``-X importtime`` lines printed before its
   "ComfyUI launched" log line).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

from comfyfleet.testing import ComfyTestServer

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
MiB = 2**20


def _overhead_module() -> Any:
    """bench/overhead.py's workloads and bare client (loaded by path: bench/ is no package)."""
    spec = importlib.util.spec_from_file_location("bench_overhead", HERE / "overhead.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status < 500
    except OSError:
        return False


def wait_answer(url: str, proc: subprocess.Popen, timeout: float = 120, every: float = 0.002):
    end = time.monotonic() + timeout
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"{url} never answered (exit {proc.poll()})")
        time.sleep(every)
    return time.perf_counter()


class Worker:
    """``comfyfleet worker --local`` in a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "comfyfleet"), "worker", "--local", "--port", str(self.port)],
            env={**os.environ, "COMFYFLEET_MIN_FREE_DISK_BYTES": "0", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self) -> float:
        return wait_answer(f"{self.url}/docs", self.proc, every=0.01) - self.started

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


# --- 1. per-job overhead -----------------------------------------------------------------------
async def per_job(comfy: Any, worker: Worker, n: int) -> None:
    ov = _overhead_module()
    bare = ov.BareClient(comfy.url)
    await bare.start()
    session = aiohttp.ClientSession()

    async def via_worker(body: dict[str, Any]) -> None:
        async with session.post(f"{worker.url}/runsync", json={"input": body}) as resp:
            answer = await resp.json()
        assert answer["status"] == "COMPLETED", answer
        assert answer["output"]["images"][0]["data"]

    def job(who: str, workload: str) -> Callable[[], Awaitable[Any]]:
        if workload == "W1":
            graph = ov.w1()
            return (
                (lambda: bare.run(graph, None))
                if who == "bare"
                else (lambda: via_worker({"workflow": graph}))
            )
        data = ov.fresh_png()
        if who == "bare":
            name = f"bare_{time.perf_counter_ns()}.png"
            return lambda: bare.run(ov.w2(name), (name, data))
        image = {"name": "input.png", "image": ov.base64.b64encode(data).decode()}
        return lambda: via_worker({"workflow": ov.w2("input.png"), "images": [image]})

    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for workload in ("W1", "W2"):  # warm up
            for who in ("worker", "bare"):
                for _ in range(3):
                    await job(who, workload)()
        for i in range(n):
            for workload in ("W1", "W2"):
                for who in ("worker", "bare") if i % 2 else ("bare", "worker"):
                    call = job(who, workload)
                    start = time.perf_counter()
                    await call()
                    samples.setdefault((who, workload), []).append(time.perf_counter() - start)
    finally:
        await session.close()
        await bare.close()
    print(f"\n[1] per-job overhead, n={n} (ms)")
    heads = ("worker med", 12), ("p95", 9), ("bare med", 12), ("p95", 9), ("overhead", 11)
    print(" " * 6 + "".join(f"{h:>{w}}" for h, w in heads) + f"{'ratio':>8}")
    for workload in ("W1", "W2"):
        w, b = samples[("worker", workload)], samples[("bare", workload)]
        mw, mb = statistics.median(w), statistics.median(b)
        print(
            f"{workload:6}{mw * 1e3:12.2f}{p95(w) * 1e3:9.2f}{mb * 1e3:12.2f}{p95(b) * 1e3:9.2f}"
            f"{(mw - mb) * 1e3:11.2f}{mw / mb:8.2f}"
        )


# --- 2. peak memory with a big artifact ---------------------------------------------------------
def noise_png(path: Path, megabytes: int) -> None:
    side = int((megabytes * MiB / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=0)


def rss(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def runsync(worker: Worker, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(
        f"{worker.url}/runsync",
        data=json.dumps({"input": body}).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=900) as resp:
        answer = json.loads(resp.read())
    assert answer["status"] == "COMPLETED", str(answer)[:500]
    return time.perf_counter() - start, answer["output"]


def big_job(worker: Worker) -> tuple[float, int, str]:
    """Peak RSS growth of the worker while it runs one big-artifact job (after a warm-up job,
    so first-use imports such as boto3 are not counted)."""
    runsync(worker, {"workflow": _overhead_module().w1()})
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "noise.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}},
    }
    reset = reset_peak(worker.proc.pid)
    before = rss(worker.proc.pid)["VmRSS"]
    elapsed, output = runsync(worker, {"workflow": graph})
    peak = rss(worker.proc.pid)["VmHWM"]
    note = "" if reset else " (peak not reset: clear_refs unavailable)"
    return elapsed, peak - before, output["images"][0]["type"] + note


def memory(comfy: Any, megabytes: int, tmp: Path) -> None:
    noise_png(comfy.input_dir / "noise.png", megabytes)
    size = (comfy.input_dir / "noise.png").stat().st_size
    print(f"\n[2] peak RSS growth of the worker returning a {size / MiB:.0f} MiB PNG")
    port = free_port()
    moto = subprocess.Popen(
        [shutil.which("moto_server", path=str(VENV_BIN)) or "moto_server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_answer(endpoint, moto, 60, 0.05)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="x",
            aws_secret_access_key="x",
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        s3 = {
            "BUCKET_ENDPOINT_URL": endpoint,
            "BUCKET_NAME": "bench",
            "BUCKET_ACCESS_KEY_ID": "x",
            "BUCKET_SECRET_ACCESS_KEY": "x",
        }
        for label, env in (("inline", {}), ("s3", s3)):
            worker = Worker({"COMFYUI_URL": comfy.url, **env}, tmp / f"worker-{label}.log")
            try:
                worker.wait()
                elapsed, growth, kind = big_job(worker)
                print(f"{label:8} growth {growth / MiB:8.1f} MiB   job {elapsed:6.2f} s   ({kind})")
            finally:
                worker.stop()
    finally:
        moto.terminate()
        moto.wait(10)


# --- 3. start-up overhead ------------------------------------------------------------------------
FAKE_MAIN = HERE.parent / "tests" / "worker" / "fake_comfyui_main.py"


def fake_comfy_dir(tmp: Path) -> Path:
    """A COMFYUI_DIR whose main.py runs the test server (the one the tests use)."""
    folder = tmp / "ComfyUI"
    folder.mkdir(exist_ok=True)
    shutil.copy(FAKE_MAIN, folder / "main.py")
    return folder


def supervised(comfy_dir: Path) -> float:
    """Supervisor.start() -> ready, as the supervisor sees it (its polling included)."""
    from comfyfleet.comfy.supervisor import Supervisor

    sup = Supervisor(comfy_dir, f"http://127.0.0.1:{free_port()}")
    start = time.perf_counter()
    sup.start()
    try:
        sup.wait_ready_blocking(120)
        return time.perf_counter() - start
    finally:
        sup.stop()


def imports_before_launch(comfy_dir: Path) -> tuple[float, int]:
    """Seconds of (top-level) imports, and modules, before the worker launched ComfyUI."""
    port = free_port()
    env = {
        **os.environ,
        "COMFYUI_DIR": str(comfy_dir),
        "COMFYUI_URL": f"http://127.0.0.1:{port}",
        "COMFYUI_ARGS": "",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-X",
            "importtime",
            str(VENV_BIN / "comfyfleet"),
            "worker",
            "--local",
            "--port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        if 'msg="ComfyUI launched"' in line:
            break
        lines.append(line)
    proc.terminate()
    proc.communicate(timeout=20)
    row = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)")
    rows = [m.groups() for ln in lines if (m := row.match(ln))]
    return sum(int(us) for us, indent, _ in rows if not indent) / 1e6, len(rows)


def startup(tmp: Path, starts: int) -> None:
    comfy_dir = fake_comfy_dir(tmp)
    direct, sup, via, api = [], [], [], []
    for _ in range(starts):
        sup.append(supervised(comfy_dir))
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--port", str(port)],
            cwd=comfy_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        direct.append(wait_answer(f"http://127.0.0.1:{port}/system_stats", proc) - t0)
        proc.terminate()
        proc.wait(10)

        port = free_port()
        env = {
            "COMFYUI_DIR": str(comfy_dir),
            "COMFYUI_URL": f"http://127.0.0.1:{port}",
            "COMFYUI_ARGS": "",
        }
        worker = Worker(env, tmp / "worker-start.log")
        try:
            via.append(
                wait_answer(f"http://127.0.0.1:{port}/system_stats", worker.proc) - worker.started
            )
            api.append(worker.wait())
        finally:
            worker.stop()
    d, s, v, a = (statistics.median(x) for x in (direct, sup, via, api))
    before = [imports_before_launch(comfy_dir) for _ in range(starts)]
    imported = statistics.median(seconds for seconds, _ in before)
    print(f"\n[3] start-up, median of {starts} (s)")
    print(
        f"imports before ComfyUI is launched            {imported:7.3f}   "
        f"({before[0][1]} modules, -X importtime)"
    )
    print(f"ComfyUI alone: launch -> /system_stats        {d:7.3f}")
    print(f"Supervisor: start() -> ready                  {s:7.3f}   overhead {s - d:+.3f}")
    print(f"comfyfleet worker: launch -> ComfyUI answers  {v:7.3f}   overhead {v - d:+.3f}")
    print(f"comfyfleet worker: launch -> its API answers  {a:7.3f}")
    print(f"worker ready (both) minus ComfyUI alone       {max(v, a) - d:+.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="runs per workload and side")
    parser.add_argument("--big-mb", type=int, default=200, help="size of the big artifact")
    parser.add_argument("--starts", type=int, default=5, help="start-ups to measure")
    parser.add_argument("--skip", default="", help="comma list of overhead,memory,startup")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as root:
        tmp = Path(root)
        comfy = ComfyTestServer.start_subprocess(root=tmp / "comfy")
        try:
            if "overhead" not in skip:
                worker = Worker(
                    {
                        "COMFYUI_URL": comfy.url,
                        "COMFYFLEET_COMFY_OUTPUT_DIR": str(comfy.output_dir),
                    },
                    tmp / "worker.log",
                )
                try:
                    worker.wait()
                    asyncio.run(per_job(comfy, worker, args.n))
                finally:
                    worker.stop()
            if "memory" not in skip:
                memory(comfy, args.big_mb, tmp)
        finally:
            comfy.stop()
        if "startup" not in skip:
            startup(tmp, args.starts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
