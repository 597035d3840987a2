"""Helpers for the fleet suites: workflows whose executions can be counted (files each
SaveImage wrote on each backend, kept there by ``debug``: jobs otherwise remove their files),
event-driven waits, settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from comfyfleet.config import Settings
from comfyfleet.fleet import Fleet, Subscription
from comfyfleet.jobs import JobSpec
from comfyfleet.queue import Queue, Task
from gateway.gateway_helpers import Served, serve, sse_events  # noqa: F401  (re-exported)


def workflow(prefix: str, *, fail: bool = False, slow_steps: int = 0) -> dict[str, Any]:
    """EmptyImage -> SaveImage(prefix): one file per execution, named after the task."""
    image: list[Any] = ["1", 0]
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
    }
    if slow_steps:
        graph["3"] = {
            "class_type": "FleetTestSlow",
            "inputs": {"image": image, "steps": slow_steps, "seconds_per_step": 0.05, "seed": 0},
        }
        image = ["3", 0]
    if fail:
        graph["4"] = {
            "class_type": "FleetTestFail",
            "inputs": {"image": image, "message": "boom on purpose"},
        }
        image = ["4", 0]
    graph["2"] = {"class_type": "SaveImage", "inputs": {"images": image, "filename_prefix": prefix}}
    return graph


def payload(prefix: str, **kw: Any) -> dict[str, Any]:
    spec = JobSpec(workflow=workflow(prefix, **kw), debug=True)  # keep files: `executions`
    return {"spec": spec.model_dump(mode="json", exclude_none=True), "source": "native"}


def executions(output_dirs: list[Path], prefix: str) -> int:
    """How many times ``prefix``'s SaveImage ran, over every backend."""
    return sum(len(list(Path(d).rglob(f"{prefix}_*"))) for d in output_dirs)


async def submit(
    queue: Queue, n: int, *, max_attempts: int = 3, timeout: float | None = None, **kw: Any
) -> list[Task]:
    """n tasks whose id is also their SaveImage prefix."""
    tasks = []
    for _ in range(n):
        prefix = f"t{uuid.uuid4().hex[:12]}"
        task, _ = await queue.submit(
            payload(prefix, **kw),
            task_id=prefix,
            max_attempts=max_attempts,
            timeout_seconds=timeout,
        )
        tasks.append(task)
    return tasks


async def submit_followed(queue: Queue, fleet: Fleet, **kw: Any) -> tuple[Task, Subscription]:
    """One counted task, with a subscription to its events on the fleet's bus taken before it
    was submitted (so `prompt_started` cannot miss the moment)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    sub = fleet.events.subscribe(prefix)
    task, _ = await queue.submit(payload(prefix, **kw), task_id=prefix)
    return task, sub


async def prompt_started(sub: Subscription, timeout: float = 30.0) -> None:
    """Until ComfyUI began executing the task's prompt (its ``execution_start`` reached the
    agent: a ``running`` progress event on the bus)."""

    async def wait() -> None:
        async for event in sub:
            if event.get("type") == "progress" and event.get("stage") == "running":
                return
        raise AssertionError("the task finished before its prompt was seen starting")

    await asyncio.wait_for(wait(), timeout)


class ComfyQueue:
    """A test server's own prompt queue, followed through its ``status`` broadcasts (sent on
    every change of the queue): ``await q.until(pred)`` returns once ``pred(running, pending)``
    holds for the tasks running and waiting there -- event-driven, no polling. Prompts are
    named by the task id in their SaveImage prefix (see `workflow`)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._changed = asyncio.Event()

    def state(self) -> tuple[list[str], list[str]]:
        running, pending = self.server.queue.get_current_queue()
        return [_task_of(item) for item in running], [_task_of(item) for item in sorted(pending)]

    async def until(self, pred: Any, timeout: float = 30.0) -> tuple[list[str], list[str]]:
        async def wait() -> tuple[list[str], list[str]]:
            while True:
                self._changed.clear()
                state = self.state()
                if pred(*state):
                    return state
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[ComfyQueue]:
        async def watch(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for message in ws:
                is_text = message.type == aiohttp.WSMsgType.TEXT
                if is_text and json.loads(message.data).get("type") == "status":
                    self._changed.set()

        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{self.server.ws_url}?clientId=q-{uuid.uuid4().hex}") as ws,
        ):
            watcher = asyncio.create_task(watch(ws))
            try:
                yield self
            finally:
                watcher.cancel()


def _task_of(item: tuple[Any, ...]) -> str:
    """The task id a queued prompt belongs to: the last part of its SaveImage prefix."""
    prefix = str(item[2].get("2", {}).get("inputs", {}).get("filename_prefix", ""))
    return prefix.rsplit("/", 1)[-1]


async def finished(queue: Queue, task_ids: list[str], timeout: float = 60.0) -> list[Task]:
    """Every task once finished (event-driven waits, no sleeps)."""
    done = await asyncio.gather(*(queue.wait_finished(t, timeout) for t in task_ids))
    unfinished = [t.id for t in done if not t.finished]
    assert not unfinished, f"not finished within {timeout}s: {unfinished}"
    return list(done)


async def running(queue: Queue, task_id: str, timeout: float = 30.0) -> Task:
    """The task once it is running (watch: event-driven)."""

    async def wait() -> Task:
        async for task in queue.watch(task_id):
            if task.status != "queued":
                return task
        raise AssertionError("watch ended")

    return await asyncio.wait_for(wait(), timeout)


async def stopped_claiming(backend: Any, timeout: float = 10.0) -> None:
    """Until no claim of ``backend`` is in flight (after a drain: the claim was withdrawn)."""

    async def wait() -> None:
        while True:
            changed = backend.change_event()
            if not backend.claiming:
                return
            await changed.wait()

    await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def queue_depth(server: Any) -> AsyncIterator[list[int]]:
    """Watch a ComfyUI's own ``status`` broadcasts; yields a one-element list that holds the
    highest ``queue_remaining`` (running + pending prompts) seen, once the block is left."""
    seen: list[int] = [0]

    async def watch(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if data.get("type") == "status":
                    depth = data["data"]["status"]["exec_info"]["queue_remaining"]
                    seen[0] = max(seen[0], depth)

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server.ws_url}?clientId=depth-{uuid.uuid4().hex}") as ws,
    ):
        watcher = asyncio.create_task(watch(ws))
        try:
            yield seen
        finally:
            watcher.cancel()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(tmp_path: Path, backends: list[str], **kw: Any) -> Settings:
    options: dict[str, Any] = {
        "backends": backends,
        "data_dir": tmp_path / "data",
        "lease_seconds": 5.0,
        "retry_backoff": 0.1,
        "job_timeout": 60.0,
        "templates_dir": None,
    }
    options.update(kw)
    return Settings(**options)


def make_fleet(settings: Settings, queue: Queue, **kw: Any) -> Fleet:
    """A Fleet whose artifacts go to the gateway's store under ``settings.data_dir``."""
    return Fleet(settings, queue, **kw)


# --- through the HTTP API (serving and SSE: the gateway suite's helpers) ---------------------


async def post_task(client: httpx.AsyncClient, **kw: Any) -> tuple[str, str]:
    """Submit a counted workflow; returns (task id, SaveImage prefix)."""
    prefix = f"t{os.urandom(6).hex()}"
    body = {"workflow": workflow(prefix, **kw), "debug": True}  # keep files: `executions`
    resp = await client.post("/api/v1/tasks", json=body)
    resp.raise_for_status()
    return str(resp.json()["id"]), prefix


async def until(client: httpx.AsyncClient, task_id: str, event: str) -> dict[str, Any]:
    """Follow the task's SSE stream until ``event`` (event-driven, no polling)."""
    async with client.stream("GET", f"/api/v1/tasks/{task_id}/events") as resp:
        async for name, data in sse_events(resp):
            if name == event:
                return data
            if name == "finished":
                raise AssertionError(f"finished before {event}: {data}")
    raise AssertionError("stream ended")


async def final(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The task once finished (``?wait``)."""
    resp = await client.get(f"/api/v1/tasks/{task_id}", params={"wait": 60}, timeout=90)
    body = resp.json()
    assert body["status"] in ("succeeded", "failed", "cancelled"), body
    return dict(body)


# --- model files a job asks for -------------------------------------------------------------


class FileServer:
    """Model files over HTTP on 127.0.0.1, as a CDN would serve them; counts GETs per path."""

    def __init__(self) -> None:
        from collections import Counter

        self.files: dict[str, bytes] = {}
        self.gets: Counter[str] = Counter()
        self.url = ""

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url + path

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FileServer]:
        from aiohttp import web

        async def serve_file(request: web.Request) -> web.StreamResponse:
            body = self.files.get(request.path)
            if body is None:
                return web.Response(status=404)
            if request.method == "GET":
                self.gets[request.path] += 1
            return web.Response(body=body, content_type="application/octet-stream")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve_file)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()


def checkpoint_workflow(name: str) -> dict[str, Any]:
    """A workflow naming checkpoint ``name``: it validates only once the test server lists the
    file (its ``models/checkpoints/``); it then fails at execution, the server not implementing
    CheckpointLoaderSimple."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "m"}},
    }


NOT_IMPLEMENTED = "not implemented by the comfyfleet test server"
