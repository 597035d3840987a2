"""How well does the gateway keep its backends busy, and how fast does a task start?

    python bench/dispatch.py [-k 4] [-w 0.2] [-m 400] [--idle 20] [--database URL]

Starts K ComfyUI test servers (child processes, each prompt takes a fixed W seconds) and a
gateway (``comfyfleet serve`` in a child process, K local backends, SQLite unless
``--database``). Then, all through the HTTP API:

1. warm-up: one task per backend;
2. idle start latency: ``--idle`` tasks one after another, each on an idle fleet: queue-to-start
   is the task's ``started_at - created_at`` (both stamped by the queue);
3. throughput: M tasks submitted at once; makespan = last ``finished_at`` - first
   ``created_at``; ``utilisation`` = ideal makespan (M*W/K) / measured makespan.

Prints figures (targets: utilisation >= 0.95 with K=4, W=0.2, M=400; idle start p50 <= 10 ms);
asserts nothing. Defaults finish in well under 40 s on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from comfyfleet.testing import ComfyTestProcess, ComfyTestServer


def workflow(prefix: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


SCHEMA = f"bench_{uuid.uuid4().hex[:8]}"  # PostgreSQL: a private schema, dropped at the end


def drop_schema(database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(root: Path, backends: list[str], database: str | None) -> tuple[Any, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "comfyfleet.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(root / "gateway"),
    ]
    for url in backends:
        cmd += ["--comfy", url]
    if database:
        cmd += ["--database", database]
    env = {**os.environ, "COMFYFLEET_LOG_LEVEL": "WARNING", "COMFYFLEET_API_KEYS": "[]"}
    if database:
        env["COMFYFLEET_DATABASE_SCHEMA"] = SCHEMA
    log = (root / "gateway.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a child process: wait until it listens
        if proc.poll() is not None:
            raise SystemExit((root / "gateway.log").read_text()[-3000:])
        try:
            backends_up = httpx.get(url + "/api/v1/backends", timeout=1).json()
            if all(b["state"] == "idle" for b in backends_up) and backends_up:
                return proc, url
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit("the gateway did not start:\n" + (root / "gateway.log").read_text()[-3000:])


async def submit(client: httpx.AsyncClient) -> str:
    resp = await client.post("/api/v1/tasks", json={"workflow": workflow(f"b{uuid.uuid4().hex}")})
    resp.raise_for_status()
    return str(resp.json()["id"])


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    while True:
        resp = await client.get(f"/api/v1/tasks/{task_id}", params={"wait": 60})
        body = resp.json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            if body["status"] != "succeeded":
                raise SystemExit(f"task {task_id} {body['status']}: {body.get('error')}")
            return body


def _cpu(proc: subprocess.Popen[bytes]) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return float(times.user + times.system)


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="comfyfleet-bench-dispatch-"))
    servers: list[ComfyTestProcess] = []
    gateway = None
    t0 = time.monotonic()
    try:
        for i in range(args.k):
            servers.append(
                ComfyTestServer.start_subprocess(
                    root / f"comfy{i}", cache="none", faults={"job_seconds": args.w}
                )
            )
        gateway, url = start_gateway(root, [s.url for s in servers], args.database)
        started = time.monotonic() - t0
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            warm = await asyncio.gather(*(submit(client) for _ in range(args.k)))
            await asyncio.gather(*(finished(client, t) for t in warm))

            idle = []
            for _ in range(args.idle):
                task = await finished(client, await submit(client))
                idle.append((ts(task["started_at"]) - ts(task["created_at"])) * 1000)

            sem = asyncio.Semaphore(16)

            async def one() -> str:
                async with sem:
                    return await submit(client)

            cpu_before = _cpu(gateway)
            ids = await asyncio.gather(*(one() for _ in range(args.m)))
            # One waiter at a time, in submission (= FIFO) order: thousands of parked
            # long-polls would cost the gateway CPU the measurement should not include.
            tasks = [await finished(client, t) for t in ids]
            gateway_cpu = _cpu(gateway) - cpu_before
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)
        for srv in servers:
            srv.kill()
        if args.database:
            drop_schema(args.database)

    if args.dump:
        args.dump.write_text(json.dumps(tasks))
    first = min(ts(t["created_at"]) for t in tasks)
    last = max(ts(t["finished_at"]) for t in tasks)
    makespan = last - first
    ideal = args.m * args.w / args.k
    waits = [(ts(t["started_at"]) - ts(t["created_at"])) * 1000 for t in tasks]
    per_backend: dict[str, int] = {}
    for t in tasks:
        per_backend[t["backend"]] = per_backend.get(t["backend"], 0) + 1
    engine = "PostgreSQL" if args.database else "SQLite"
    print(
        f"dispatch bench: K={args.k} W={args.w:.3f}s M={args.m} via the HTTP API ({engine}); "
        f"set-up {started:.1f}s"
    )
    print(
        f"utilisation {ideal / makespan:.3f}  (ideal makespan {ideal:.2f}s, "
        f"measured {makespan:.2f}s, overhead {(makespan - ideal) * args.k / args.m * 1000:.1f}"
        " ms per task per backend)"
    )
    print(
        f"start latency on an idle backend: p50 {statistics.median(idle):.1f} ms, "
        f"p99 {pct(idle, 0.99):.1f} ms (n={len(idle)})"
    )
    print(
        f"queue wait under load: p50 {statistics.median(waits):.0f} ms, "
        f"p99 {pct(waits, 0.99):.0f} ms; tasks per backend {sorted(per_backend.values())}"
    )
    print(
        f"gateway process CPU {gateway_cpu / args.m * 1000:.1f} ms per task; "
        f"total {time.monotonic() - t0:.1f}s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", type=int, default=4, help="backends (test servers)")
    p.add_argument("-w", type=float, default=0.2, help="seconds per job")
    p.add_argument("-m", type=int, default=400, help="tasks in the throughput phase")
    p.add_argument("--idle", type=int, default=20, help="tasks for the idle start latency")
    p.add_argument("--database", default=None, help="postgresql://... (default SQLite)")
    p.add_argument("--dump", type=Path, default=None, help="write the tasks as JSON here")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
