"""The worker manager's cost and behaviour, measured against a baseline taken in the same run.

    python bench/autoscale.py [--tasks 300] [--max 4] [--job 0.2] [--cooldown 2] [--kill-after 100]

Everything runs in this process on a real SQLite queue, with a local pool whose workers are the
project's ComfyUI test server (``python -m comfyfleet.testing``, each prompt takes ``--job`` s):

1. cold start overhead: the time from a task arriving at an empty pool (min 0) to its worker
   being ready, minus the time the same worker process takes to answer when started by hand
   (Popen + the same /system_stats probe); medians of 3 each. Goal <= 0.3 s.
2. burst: ``--tasks`` tasks at once into a pool min 0 / max ``--max``. Utilisation = work done
   (tasks x job seconds) / the workers' time from ready to their last task's end; goal >= 0.90.
   Then the time from the last task's end to 0 workers; goal <= cooldown + 2 s.
3. during the burst, once ``--kill-after`` tasks have finished, kill -9 a busy worker: tasks
   lost (not succeeded), tasks whose prompt ran to completion twice (SaveImage files per task
   over every worker's kept output folder), and whether the worker was replaced.

Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from comfyfleet.config import Settings
from comfyfleet.fleet import Fleet
from comfyfleet.fleet.pools.local import free_port
from comfyfleet.jobs import JobSpec
from comfyfleet.queue.sqlite import SqliteQueue

COMMAND = "{python} -m comfyfleet.testing --port {port} --root {root} --cache none"


def payload(prefix: str) -> dict[str, Any]:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }
    spec = JobSpec(workflow=graph)
    return {"spec": spec.model_dump(mode="json", exclude_none=True), "source": "native"}


async def probe_until_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """The provider's own probe schedule (5 ms growing to 0.25 s)."""
    interval = 0.005
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        while process.poll() is None:
            try:
                if (await http.get(f"{url}/system_stats")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.25)
    raise RuntimeError("the test server exited")


async def by_hand(root: Path, job: float) -> float:
    port = free_port()
    argv = [sys.executable, "-m", "comfyfleet.testing", "--port", str(port), "--root",
            str(root), "--cache", "none", "--job-seconds", str(job)]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await probe_until_ready(f"http://127.0.0.1:{port}", process)
        return time.monotonic() - started
    finally:
        process.terminate()
        process.wait()


def settings_for(root: Path, *, max_workers: int, job: float, cooldown: float) -> Settings:
    pool = {"name": "cpu", "provider": "local", "min": 0, "max": max_workers,
            "cooldown": cooldown, "command": f"{COMMAND} --job-seconds {job}",
            "python": sys.executable, "keep_folders": "true",
            "starts_per_minute": 30}  # fmt: skip
    return Settings(
        data_dir=root / "data", backends=[], pools=[pool], lease_seconds=5.0,
        retry_backoff=0.1, job_timeout=120.0, templates_dir=None,
    )  # fmt: skip


async def submit(queue: SqliteQueue, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        prefix = f"t{uuid.uuid4().hex[:12]}"
        await queue.submit(payload(prefix), task_id=prefix)
        ids.append(prefix)
    return ids


async def cold_starts(root: Path, job: float, rounds: int) -> list[float]:
    queue = SqliteQueue(root / "cold.db")
    await queue.open()
    out = []
    try:
        async with Fleet(settings_for(root, max_workers=1, job=job, cooldown=0.1), queue) as fleet:
            manager = fleet.workers
            pool = manager.pools["cpu"]
            for _ in range(rounds):
                arrived = time.monotonic()
                [task_id] = await submit(queue, 1)
                await manager.until(lambda m: any(w.ready_at for w in pool.workers.values()), 60)
                ready = min(w.ready_at for w in pool.workers.values() if w.ready_at)
                out.append(ready - arrived)
                await queue.wait_finished(task_id, 60)
                await manager.until(lambda m: not pool.workers, 60)
    finally:
        await queue.close()
    return out


async def burst(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    queue = SqliteQueue(root / "burst.db")
    await queue.open()
    settings = settings_for(root, max_workers=args.max, job=args.job, cooldown=args.cooldown)
    try:
        async with Fleet(settings, queue) as fleet:
            manager = fleet.workers
            pool = manager.pools["cpu"]
            ids = await submit(queue, args.tasks)
            killed: dict[str, Any] = {}

            async def kill_one() -> None:
                await asyncio.gather(*(queue.wait_finished(t, 300) for t in ids[: args.kill_after]))
                for worker in list(pool.workers.values()):
                    worker.refresh()
                    if worker.state == "busy" and worker.handle is not None:
                        killed["worker"] = worker
                        killed["at"] = time.time()
                        os.killpg(int(worker.handle.ref), signal.SIGKILL)
                        return

            killer = asyncio.create_task(kill_one())
            tasks = await asyncio.gather(*(queue.wait_finished(t, 600) for t in ids))
            await killer
            last_end = max(t.finished_at.timestamp() for t in tasks if t.finished_at)
            await manager.until(lambda m: not pool.workers, args.cooldown + 60)
            to_zero = time.time() - last_end
            workers = list(pool.finished)
    finally:
        await queue.close()

    ready: dict[str, float] = {}
    ended: dict[str, float] = {}
    done: dict[str, int] = {}
    for worker in workers:
        if worker.ready_at is not None:
            ready[f"cpu/{worker.id}"] = worker.created_wall + (worker.ready_at - worker.created)
    for task in tasks:
        if task.status == "succeeded" and task.backend and task.finished_at:
            done[task.backend] = done.get(task.backend, 0) + 1
            ended[task.backend] = max(ended.get(task.backend, 0), task.finished_at.timestamp())
    victim = killed.get("worker")
    if victim is not None:
        ended[f"cpu/{victim.id}"] = killed["at"]
    window = sum(ended[b] - ready[b] for b in ended if b in ready)
    work = sum(done.values()) * args.job
    outputs = list((root / "data" / "workers" / "cpu").glob("*/output"))
    runs = {t: sum(len(list(d.glob(f"{t}_*"))) for d in outputs) for t in ids}
    return {
        "utilisation": work / window if window else 0.0,
        "workers_started": pool.started_total,
        "workers_failed": pool.failed_total,
        "to_zero": to_zero,
        "lost": sum(1 for t in tasks if t.status != "succeeded"),
        "twice": sum(1 for n in runs.values() if n > 1),
        "never_ran": sum(1 for n in runs.values() if n == 0),
        "victim": victim.id if victim else None,
        "victim_reason": victim.reason if victim else None,
        "replaced": victim is not None and pool.started_total > args.max,
        "makespan": last_end - min(t.created_at.timestamp() for t in tasks),
    }


def listing(values: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in values)


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as tmp:
        root = Path(tmp)
        hand = [await by_hand(root / f"hand{i}", args.job) for i in range(3)]
        pooled = await cold_starts(root, args.job, 3)
        hand_s, pooled_s = statistics.median(hand), statistics.median(pooled)
        print(f"cold start by hand      median {hand_s:.3f} s  ({listing(hand)})")
        print(f"cold start via the pool median {pooled_s:.3f} s  ({listing(pooled)})")
        print(f"cold start overhead     {pooled_s - hand_s:+.3f} s   (goal <= 0.3 s)")
        result = await burst(root, args)
        print(
            f"burst {args.tasks} x {args.job} s, min 0 / max {args.max}: "
            f"makespan {result['makespan']:.2f} s, "
            f"workers started {result['workers_started']} (failed {result['workers_failed']})"
        )
        print(f"utilisation             {result['utilisation']:.3f}   (goal >= 0.90)")
        print(
            f"back to 0 workers       {result['to_zero']:.2f} s after the last task "
            f"(goal <= cooldown {args.cooldown} + 2 s)"
        )
        print(
            f"kill -9 of busy worker  {result['victim']} ({result['victim_reason']}): "
            f"lost {result['lost']}, ran twice {result['twice']}, "
            f"replaced {result['replaced']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--max", type=int, default=4)
    parser.add_argument("--job", type=float, default=0.2)
    parser.add_argument("--cooldown", type=float, default=2.0)
    parser.add_argument("--kill-after", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
