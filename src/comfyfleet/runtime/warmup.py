"""Run one warm-up workflow after ComfyUI starts, and say whether we are ready.

The first prompt after a start pays for loading models into VRAM; a warm-up workflow pays it
before real jobs arrive. `WarmupState` is what the worker's ``ready`` action and the gateway's
``/readyz`` read: ``pending`` -> ``warming`` -> ``ready`` or ``failed`` (with the reason).
Plain HTTP on purpose (POST /prompt, then GET /history/{id}): one prompt does not need the
websocket client, and this stays independent of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

log = logging.getLogger(__name__)

WarmupStatus = Literal["pending", "warming", "ready", "failed"]


@dataclass
class WarmupState:
    """Where warm-up stands; cheap to read from any coroutine."""

    status: WarmupStatus = "pending"
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def __post_init__(self) -> None:
        self._done = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def start(self) -> None:
        self.status, self.started_at = "warming", time.time()

    def finish(self, status: Literal["ready", "failed"], reason: str | None = None) -> None:
        self.status, self.reason, self.finished_at = status, reason, time.time()
        self._done.set()

    async def wait(self) -> WarmupStatus:
        """Until warm-up is over (ready or failed)."""
        await self._done.wait()
        return self.status

    def to_dict(self) -> dict[str, Any]:
        took = (
            round(self.finished_at - self.started_at, 3)
            if self.started_at is not None and self.finished_at is not None
            else None
        )
        return {"status": self.status, "reason": self.reason, "seconds": took}


def load_workflow(source: Path | dict[str, Any]) -> dict[str, Any]:
    """An API-format graph from a file or a dict; rejects UI exports early."""
    graph = (
        json.loads(Path(source).read_text(encoding="utf-8")) if isinstance(source, Path) else source
    )
    if isinstance(graph, dict) and isinstance(graph.get("prompt"), dict):
        graph = graph["prompt"]
    if not isinstance(graph, dict) or not graph or "nodes" in graph:
        raise ValueError(
            "warm-up workflow must be an API-format graph {node_id: {class_type, inputs}}"
        )
    return graph


def _rejection(body: Any) -> str:
    if not isinstance(body, dict):
        return "ComfyUI rejected the warm-up prompt"
    message = (body.get("error") or {}).get("message", "rejected")
    for node_id, info in (body.get("node_errors") or {}).items():
        errors = info.get("errors") or [{}]
        message += f"; node {node_id} ({info.get('class_type')}): {errors[0].get('message')}"
        break
    return message


def _failure(entry: dict[str, Any]) -> str | None:
    status = entry.get("status") or {}
    if status.get("status_str", "success") == "success":
        return None
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            what = str(data.get("exception_message", "")).strip()
            return f"node {data.get('node_id')} ({data.get('node_type')}): {what}"
        if kind == "execution_interrupted":
            return "warm-up prompt was interrupted"
    return f"warm-up prompt ended with status {status.get('status_str')}"


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    delay = 0.05
    while True:
        try:
            async with session.get(f"{url}/system_stats") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _run(session: aiohttp.ClientSession, url: str, graph: dict[str, Any]) -> str | None:
    """Queue the graph and poll its history; None on success, else the reason."""
    prompt_id = str(uuid.uuid4())
    body = {
        "prompt": graph,
        "client_id": f"comfyfleet-warmup-{prompt_id[:8]}",
        "prompt_id": prompt_id,
    }
    async with session.post(f"{url}/prompt", json=body) as resp:
        answer = await resp.json(content_type=None)
        if resp.status != 200:
            return _rejection(answer)
    delay = 0.05
    while True:
        async with session.get(f"{url}/history/{prompt_id}") as resp:
            history = await resp.json(content_type=None) if resp.status == 200 else {}
        entry = (history or {}).get(prompt_id)
        if entry and (entry.get("status") or {}).get("completed") is not None:
            return _failure(entry)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def warm_up(
    state: WarmupState,
    comfy_url: str,
    workflow: Path | dict[str, Any] | None,
    *,
    timeout: float = 900.0,
    session: aiohttp.ClientSession | None = None,
) -> WarmupState:
    """Wait for ComfyUI, run ``workflow`` once, record the outcome in ``state``.

    Without a workflow the state is ready at once. Never raises: a failed warm-up is a state
    (``/readyz`` answers not-ready with the reason) rather than a crashed worker.
    """
    if workflow is None:
        state.finish("ready", "no warm-up workflow")
        return state
    state.start()
    url = comfy_url.rstrip("/")
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        graph = load_workflow(workflow)
        async with asyncio.timeout(timeout):
            await _wait_ready(session, url)
            reason = await _run(session, url, graph)
        state.finish("failed" if reason else "ready", reason)
    except TimeoutError:
        state.finish("failed", f"warm-up did not finish within {timeout:g}s")
    except (OSError, ValueError, aiohttp.ClientError) as e:
        state.finish("failed", f"warm-up failed: {e}")
    finally:
        if own:
            await session.close()
    log.info("warm-up %s", state.to_dict())
    return state
