"""A local stand-in for RunPod's GraphQL API (the pod calls the runpod SDK makes), because
RunPod's cloud cannot be reached from here. It records every call, checks the bearer key,
can fail any operation on purpose, and runs each "pod" as a real local process: the project's
ComfyUI test server (image ``crash``: a process that prints and exits 3), published on a
loopback port the pod's runtime reports as its public TCP mapping."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

GPUS = {"NVIDIA GeForce RTX 4090": 24}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _field(query: str, name: str) -> str | None:
    match = re.search(rf'\b{name}: "([^"]*)"', query)
    return match.group(1) if match else None


@dataclass
class Pod:
    id: str
    name: str
    image: str
    gpu: str | None
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes]
    created: float = field(default_factory=time.time)
    terminated: bool = False

    def as_json(self) -> dict[str, Any]:
        code = self.process.poll()
        status = "RUNNING" if code is None else "EXITED"
        return {
            "id": self.id,
            "name": self.name,
            "imageName": self.image,
            "desiredStatus": status,
            "lastStatusChange": f"exited with code {code}" if code is not None else "Rented",
            "env": [f"{k}={v}" for k, v in self.env.items()],
            "gpuCount": 1 if self.gpu else 0,
            "uptimeSeconds": int(time.time() - self.created),
            "machine": {"gpuDisplayName": self.gpu or "CPU"},
            "runtime": {
                "ports": [
                    {
                        "ip": "127.0.0.1",
                        "isIpPublic": True,
                        "privatePort": 8188,
                        "publicPort": self.port,
                        "type": "tcp",
                    }
                ]
            },
        }


class RunPodStandIn:
    def __init__(self, root: Path, api_key: str = "standin-key") -> None:
        self.root = root
        self.api_key = api_key
        self.calls: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}  # operation -> how many of its next calls fail
        self.pods: dict[str, Pod] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> RunPodStandIn:
        app = web.Application()
        app.router.add_post("/graphql", self._graphql)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pod in self.pods.values():
            self._kill(pod)
        if self._runner is not None:
            await self._runner.cleanup()

    def ops(self) -> list[str]:
        return [call["op"] for call in self.calls]

    # --- the API ------------------------------------------------------------------------------
    async def _graphql(self, request: web.Request) -> web.Response:
        body = await request.json()
        query = str(body.get("query", ""))
        op = self._operation(query)
        self.calls.append({"op": op, "query": query, "auth": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.fail.get(op, 0) > 0:
            self.fail[op] -= 1
            return web.json_response({"errors": [{"message": f"stand-in: {op} failed on purpose"}]})
        return web.json_response({"data": getattr(self, f"_{op}")(query)})

    @staticmethod
    def _operation(query: str) -> str:
        for op in ("podFindAndDeployOnDemand", "deployCpuPod", "podTerminate", "gpuTypes"):
            if op in query:
                return op
        if "myself" in query:
            return "myPods"
        if re.search(r"\bpod\(input", query):
            return "pod"
        return "unknown"

    def _gpuTypes(self, query: str) -> dict[str, Any]:
        gpu = _field(query, "id")
        found = [{"id": gpu, "displayName": gpu, "memoryInGb": GPUS[gpu]}] if gpu in GPUS else []
        return {"gpuTypes": found}

    def _podFindAndDeployOnDemand(self, query: str) -> dict[str, Any]:
        return {"podFindAndDeployOnDemand": self._deploy(query)}

    def _deployCpuPod(self, query: str) -> dict[str, Any]:
        return {"deployCpuPod": self._deploy(query)}

    def _deploy(self, query: str) -> dict[str, Any]:
        name = _field(query, "name") or "pod"
        image = _field(query, "imageName") or ""
        env = dict(re.findall(r'\{ key: "([^"]*)", value: "([^"]*)" \}', query))
        pod_id = uuid.uuid4().hex[:14]
        port = _free_port()
        root = self.root / pod_id
        if image == "crash":
            argv = [sys.executable, "-c", "print('boom at start'); raise SystemExit(3)"]
        else:
            argv = [sys.executable, "-m", "comfyfleet.testing", "--port", str(port),
                    "--root", str(root), "--cache", "none"]  # fmt: skip
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        pod = Pod(pod_id, name, image, _field(query, "gpuTypeId"), env, port, process)
        self.pods[pod_id] = pod
        return {"id": pod_id, "imageName": image, "env": pod.as_json()["env"], "machineId": "m1"}

    def _myPods(self, query: str) -> dict[str, Any]:
        pods = [p.as_json() for p in self.pods.values() if not p.terminated]
        return {"myself": {"pods": pods}}

    def _pod(self, query: str) -> dict[str, Any]:
        pod = self.pods.get(_field(query, "podId") or "")
        return {"pod": pod.as_json() if pod and not pod.terminated else None}

    def _podTerminate(self, query: str) -> dict[str, Any]:
        pod = self.pods.get(_field(query, "podId") or "")
        if pod is not None:
            self._kill(pod)
            pod.terminated = True
        return {"podTerminate": None}

    @staticmethod
    def _kill(pod: Pod) -> None:
        if pod.process.poll() is None:
            pod.process.kill()
        pod.process.wait()
