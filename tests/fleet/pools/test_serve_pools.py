"""`comfyfleet serve --pool ...` end to end: a gateway with a local pool at min 0 runs a burst
from zero workers to max and back to zero, shows its workers in /api/v1/workers and counts
them in /api/v1/metrics and /metrics; a bad pool spec stops the command with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.launch import build_settings

from ..helpers import post_task, serve
from .cases import local_options


async def test_serve_with_a_local_pool_scales_from_zero_to_max_and_back(tmp_path: Path) -> None:
    command = local_options(0.2)["command"]
    pool = f"cpu=local:min=0,max=2,cooldown=0.3,command={command},python={sys.executable}"
    settings = build_settings(data_dir=tmp_path / "data", pools=[pool])
    assert settings.backends == []  # pools only: no default backend at comfy_url
    async with serve(create_app(settings)) as served, served.client() as http:
        manager = served.gateway.fleet.workers
        listed = (await http.get("/api/v1/workers")).json()
        assert listed["workers"] == [] and listed["leader"] is True
        assert listed["pools"][0]["spec"].startswith("cpu=local:min=0,max=2")

        ids = [(await post_task(http))[0] for _ in range(6)]
        await manager.until(lambda m: len(m.pools["cpu"].active()) == 2, 60)
        workers = (await http.get("/api/v1/workers")).json()["workers"]
        assert {w["pool"] for w in workers} == {"cpu"} and len(workers) == 2
        assert all(w["state"] in ("starting", "idle", "busy") for w in workers)

        async def finished(task_id: str) -> str:
            body = (await http.get(f"/api/v1/tasks/{task_id}", params={"wait": 60})).json()
            return body["status"]

        assert set(await asyncio.gather(*map(finished, ids))) == {"succeeded"}
        text = (await http.get("/metrics")).text
        assert 'comfyfleet_pool_worker_starts_total{pool="cpu"} 2.0' in text

        await manager.until(lambda m: not m.pools["cpu"].workers, 30)
        metrics = (await http.get("/api/v1/metrics")).json()["workers"]
        assert metrics["total_workers"] == 0 and metrics["starting_workers"] == 0
        workers = (await http.get("/api/v1/workers")).json()["workers"]
        assert [w["state"] for w in workers] == ["stopped", "stopped"]
        assert all(w["executed"] >= 1 for w in workers)
        text = (await http.get("/metrics")).text
        assert 'comfyfleet_pool_workers{pool="cpu",state="idle"} 0.0' in text
        assert 'comfyfleet_pool_worker_stops_total{pool="cpu"} 2.0' in text


def test_a_bad_pool_flag_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "comfyfleet.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--pool",
            "gpu=local:min=3,max=2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "comfyfleet serve: pool 'gpu': need 0 <= min <= max and max >= 1 (min=3, max=2)"
    ]
