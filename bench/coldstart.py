"""First run on an empty volume, then warm starts from it: what does provisioning cost?

    python bench/coldstart.py [--starts K] [--keep DIR]

Sources are local (the tests' stand-ins: bare git repositories of a small "ComfyUI" whose
main.py runs comfyfleet's test server, a custom node, a wheel directory; see
tests/runtime/provision_standins.py), so the same code paths run as on a real volume, minus
the download sizes.

1. **First run**: ``comfyfleet provision --json`` on an empty directory; the time of each step.
2. **ComfyUI alone**: ``venv/bin/python main.py`` from the provisioned checkout, spawn →
   ``/system_stats`` answers (polled every 2 ms); median of K.
3. **Warm start**: ``comfyfleet worker --local`` with ``COMFYFLEET_PROVISION=auto`` and the git
   repositories moved away (the network "refused"), spawn → the ``ready`` action answers
   ready; and the same worker told the ComfyUI dir directly (``COMFYFLEET_PROVISION=off``).
   Printed minus ComfyUI alone. Goal: warm start → ready, minus ComfyUI, ≤ 0.5 s.

The stand-in boots in about a second, faster than the worker's own local API (the runpod SDK
and uvicorn), which a real ComfyUI (torch, custom nodes: 10 s and more) never is. So 2 and 3
run for each ``--comfy-boot`` value: extra seconds the stand-in sleeps before it serves
(default ``0,5``); with 0 the figure is the worker's own start, with 5 it is what provisioning
and the worker add to a ComfyUI that boots slower than they do.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


def standins():
    path = HERE.parent / "tests" / "runtime" / "provision_standins.py"
    spec = importlib.util.spec_from_file_location("provision_standins", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["provision_standins"] = mod
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**more: str) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("COMFYFLEET_", "COMFYUI_", "PIP_", "SWARM", "RUNPOD_"))
        and k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY")
    }
    return {**keep, "NO_PROXY": "127.0.0.1", **more}


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def comfy_alone(comfy_dir: Path, python: Path, boot: str) -> float:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(python), "main.py", "--listen", "127.0.0.1", "--port", str(port)],
        cwd=comfy_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(STANDIN_BOOT_SECONDS=boot),
    )
    try:
        while not answers(f"http://127.0.0.1:{port}/system_stats"):
            if proc.poll() is not None:
                raise RuntimeError("ComfyUI stand-in exited")
            time.sleep(0.002)
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(10)


def worker_ready(env: dict[str, str], log: Path) -> tuple[float, float, float | None]:
    """Spawn → ComfyUI answers, spawn → `ready` answers ready, and the provisioning check's
    own seconds from the worker's log (None when provisioning is off)."""
    api, comfy = free_port(), free_port()
    env = env | {
        "COMFYUI_URL": f"http://127.0.0.1:{comfy}",
        "COMFYUI_ARGS": f"--listen 127.0.0.1 --port {comfy}",
    }
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "comfyfleet"), "worker", "--local", "--port", str(api)],
            env=clean_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    comfy_at = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            now = time.perf_counter()
            if comfy_at is None and answers(f"http://127.0.0.1:{comfy}/system_stats"):
                comfy_at = now - start
            try:
                body = httpx.post(
                    f"http://127.0.0.1:{api}/runsync",
                    json={"input": {"action": "ready"}},
                    timeout=10,
                ).json()
                if body.get("status") == "COMPLETED":
                    ready_at = time.perf_counter() - start
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(20)
    if comfy_at is None:
        comfy_at = ready_at
    m = re.search(
        r'msg="volume is provisioned; starting warm".*? seconds=([\d.]+)', log.read_text()
    )
    return comfy_at, ready_at, float(m.group(1)) if m else None


def warm_starts(volume: Path, offline: dict, direct: dict, tmp: Path, k: int, boot: str) -> None:
    offline, direct = (
        offline | {"STANDIN_BOOT_SECONDS": boot},
        direct | {"STANDIN_BOOT_SECONDS": boot},
    )
    alone, warm, plain = [], [], []
    runs = [
        lambda i: alone.append(comfy_alone(volume / "ComfyUI", volume / "venv/bin/python", boot)),
        lambda i: warm.append(worker_ready(offline, tmp / f"warm-{boot}-{i}.log")),
        lambda i: plain.append(worker_ready(direct, tmp / f"plain-{boot}-{i}.log")),
    ]
    for i in range(k):  # interleaved, each in every position in turn: load hits all alike
        for n in range(3):
            runs[(i + n) % 3](i)
    med = statistics.median
    base = med(alone)
    print(f"\n[2] stand-in boot +{boot} s: ComfyUI alone, spawn -> /system_stats: {base:.3f} s")
    print(f"[3] warm start, median of {k} (s; minus ComfyUI alone in brackets)")
    for label, rows in (
        ("provision=auto (repos gone)", warm),
        ("provision=off (COMFYUI_DIR)", plain),
    ):
        comfy_at = med(r[0] for r in rows)
        ready_at = med(r[1] for r in rows)
        print(
            f"    {label:<30} ComfyUI answers {comfy_at:6.3f} ({comfy_at - base:+.3f})   "
            f"ready {ready_at:6.3f} ({ready_at - base:+.3f})"
        )
    checks = [r[2] for r in warm if r[2] is not None]
    print(f"    the warm check itself (worker log): median {med(checks) * 1000:.1f} ms")
    goal = med(r[1] for r in warm) - base
    verdict = "met" if goal <= 0.5 else "NOT met"
    print(f"    goal: warm start -> ready minus ComfyUI <= 0.5 s: {goal:+.3f} s ({verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="warm starts to measure")
    parser.add_argument("--comfy-boot", default="0,5", help="stand-in boot delays (s), a,b")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args(argv)
    tmp_ctx = tempfile.TemporaryDirectory() if args.keep is None else None
    tmp = Path(tmp_ctx.name) if tmp_ctx else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    sources = standins().make_sources(tmp / "sources")
    volume = tmp / "volume"
    volume.mkdir()
    env = sources.env(volume, COMFYFLEET_DATA_DIR=str(tmp / "data"))

    print("[1] first run on an empty volume: comfyfleet provision (local sources)")
    t0 = time.perf_counter()
    run = subprocess.run(
        [str(VENV_BIN / "comfyfleet"), "provision", "--json"],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    result = json.loads(run.stdout)
    for step in result["steps"]:
        print(f"    {step['name']:<40} {step['seconds']:6.2f} s")
    print(f"    {'total (command wall time)':<40} {wall:6.2f} s")

    for repo in (sources.comfy_repo, sources.node_repo):
        repo.rename(repo.with_name(repo.name + ".gone"))  # warm starts must not need them
    offline = env | {"COMFYFLEET_PROVISION_INDEX_URL": "http://127.0.0.1:9/simple"}
    direct = {
        "COMFYFLEET_PROVISION": "off",
        "COMFYUI_DIR": str(volume / "ComfyUI"),
        "COMFYFLEET_COMFY_PYTHON": str(volume / "venv/bin/python"),
        "COMFYFLEET_DATA_DIR": str(tmp / "data"),
        "COMFYFLEET_VOLUME_BASES": str(volume),  # the same model roots as with provisioning
    }
    for boot in args.comfy_boot.split(","):
        warm_starts(volume, offline, direct, tmp, args.starts, boot.strip())
    if tmp_ctx:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
