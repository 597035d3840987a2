"""Seed 000's lifecycle actions: health, ready, swarm_api, keepalive and shutdown.

Their answers are wrapped the way that worker's callers read them: ``{"success": true, ...}``,
or ``{"success": false, "error": "..."}`` — the ``error`` key also marks the RunPod job failed.
``swarm_api`` is a pass-through: the method, path and JSON payload go to SwarmUI unchanged and
its answer comes back unchanged, so new SwarmUI features need no worker change. With a warm-up
workflow configured, ``ready`` answers not-ready ("warming up") until it has run, then ready
with its outcome under ``warmup`` — a failed warm-up is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from comfyfleet.comfy.supervisor import Supervisor
from comfyfleet.config import Settings
from comfyfleet.errors import ServiceUnavailable
from comfyfleet.runtime.swarmui import SwarmProcess
from comfyfleet.runtime.warmup import WarmupState
from comfyfleet.worker import resources
from comfyfleet.worker.formats import Action, Health, KeepAlive, Ready, Shutdown, SwarmApi

log = logging.getLogger(__name__)


def _launched_swarm() -> SwarmProcess | None:
    from comfyfleet.worker.launch import launched_swarm

    return launched_swarm()


@dataclass
class Context:
    settings: Settings
    supervisor: Supervisor | None
    scratch_dirs: list[Path]
    warmup: WarmupState | None = None
    swarm: SwarmProcess | None = field(default_factory=_launched_swarm)  # ours to wait for


async def run(action: Action, ctx: Context) -> dict[str, Any]:
    match action:
        case Health():
            return await health(ctx)
        case Ready():
            return await ready(ctx)
        case SwarmApi():
            if ctx.swarm is not None and (waited := await _swarm_started(ctx)) is not None:
                return waited
            return await swarm_api(action, ctx.settings)
        case KeepAlive():
            return await keepalive(action, ctx)
        case Shutdown():
            return shutdown(ctx)
    raise AssertionError(action)


def _fail(error: str, **extra: Any) -> dict[str, Any]:
    return {"success": False, **extra, "error": error}


async def _get_json(url: str, timeout: float) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp,
    ):
        resp.raise_for_status()
        return await resp.json(content_type=None)


async def comfy_status(ctx: Context) -> dict[str, Any]:
    """Whether ComfyUI answers ``/system_stats`` now, plus the supervisor's view of it."""
    status: dict[str, Any] = {"url": ctx.settings.comfy_url}
    sup = ctx.supervisor
    if sup is not None:
        status |= {"managed": True, "state": sup.state, "pid": sup.pid, "restarts": sup.restarts}
    try:
        stats = await _get_json(f"{ctx.settings.comfy_url.rstrip('/')}/system_stats", 5.0)
        status |= {"reachable": True, "version": (stats.get("system") or {}).get("comfyui_version")}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        status |= {"reachable": False, "error": str(exc) or type(exc).__name__}
    return status


async def health(ctx: Context) -> dict[str, Any]:
    comfy = await comfy_status(ctx)
    res = resources.measure(ctx.scratch_dirs).as_dict()
    out: dict[str, Any] = {"success": True, "healthy": comfy["reachable"], "comfy": comfy}
    out["resources"] = res
    if ctx.warmup is not None:
        out["warmup"] = ctx.warmup.to_dict()
    if ctx.settings.swarm_url:
        try:
            await _swarm_call(ctx.settings.swarm_url, "GET", "/", None, 5.0, raw=True)
            out["swarm"] = {"url": ctx.settings.swarm_url, "reachable": True}
            if ctx.swarm is not None:
                out["swarm"] |= ctx.swarm.describe()
        except SwarmError as exc:
            out["swarm"] = {"url": ctx.settings.swarm_url, "reachable": False, "error": str(exc)}
            out["healthy"] = False
    return out


async def ready(ctx: Context) -> dict[str, Any]:
    """ComfyUI answers, its warm-up (if any) is over, and (when SwarmUI is configured) a new
    SwarmUI session is open."""
    comfy = await comfy_status(ctx)
    if not comfy["reachable"]:
        return _fail(f"ComfyUI is not ready: {comfy.get('error')}", ready=False, comfy=comfy)
    warm = ctx.warmup
    if warm is not None and warm.status in ("pending", "warming"):
        return _fail(
            "ComfyUI is warming up: the warm-up workflow is still running",
            ready=False,
            status="warming",
            warmup=warm.to_dict(),
            comfy=comfy,
        )
    out: dict[str, Any] = {"success": True, "ready": True, "status": "ready", "comfy": comfy}
    if warm is not None:
        out["warmup"] = warm.to_dict()
    if ctx.swarm is not None and (waited := await _swarm_started(ctx)) is not None:
        return waited | {"ready": False, "comfy": comfy}
    if ctx.settings.swarm_url:
        try:
            session = await _swarm_call(
                ctx.settings.swarm_url, "POST", "/API/GetNewSession", {}, 30.0
            )
        except SwarmError as exc:
            return _fail(f"SwarmUI is not ready: {exc}", ready=False, comfy=comfy)
        if not isinstance(session, dict) or "session_id" not in session:
            return _fail(f"SwarmUI gave no session: {session!r}", ready=False, comfy=comfy)
        out["session_id"] = session["session_id"]
        out["version"] = session.get("version")
    return out


async def _swarm_started(ctx: Context) -> dict[str, Any] | None:
    """Wait for the SwarmUI this worker launched to answer (its supervisor polls it with
    backoff); a failure answer if it does not, None once it does."""
    assert ctx.swarm is not None
    try:
        await ctx.swarm.wait_ready()
    except ServiceUnavailable as exc:
        return _fail(f"SwarmUI is not ready: {exc}", swarm=ctx.swarm.describe())
    return None


class SwarmError(Exception):
    pass


async def _swarm_call(
    base: str, method: str, path: str, payload: Any, timeout: float, *, raw: bool = False
) -> Any:
    url = base.rstrip("/") + path
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                url,
                json=payload if payload is not None else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp,
        ):
            body = await resp.read()
            if resp.status >= 400:
                text = body[:500].decode(errors="replace")
                raise SwarmError(f"SwarmUI answered HTTP {resp.status} to {method} {path}: {text}")
            if raw:
                return None
            try:
                return await resp.json(content_type=None)
            except ValueError:
                return body.decode(errors="replace")
    except TimeoutError:
        raise SwarmError(f"SwarmUI did not answer {method} {path} within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise SwarmError(f"SwarmUI at {base} is unreachable: {exc}") from None


async def swarm_api(action: SwarmApi, settings: Settings) -> dict[str, Any]:
    if not settings.swarm_url:
        return _fail("SwarmUI is not configured on this worker (set SWARMUI_URL)")
    try:
        response = await _swarm_call(
            settings.swarm_url, action.method, action.path, action.payload, action.timeout
        )
    except SwarmError as exc:
        return _fail(str(exc))
    return {"success": True, "response": response}


async def keepalive(action: KeepAlive, ctx: Context) -> dict[str, Any]:
    """Keep the worker busy (so RunPod keeps it warm) while checking ComfyUI stays up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + action.duration
    pings, last = 0, await comfy_status(ctx)
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(action.interval, left))
        pings, last = pings + 1, await comfy_status(ctx)
        if not last["reachable"]:
            return _fail(f"ComfyUI stopped answering: {last.get('error')}", pings=pings)
    return {"success": True, "alive": True, "pings": pings, "comfy": last}


def shutdown(ctx: Context) -> dict[str, Any]:
    """Stop the ComfyUI we launched and ask RunPod to retire this worker after the job."""
    stopped = False
    if ctx.supervisor is not None:
        ctx.supervisor.stop(reason="ComfyUI was shut down by a shutdown action; send no more jobs")
        stopped = True
    log.warning("shutdown requested", extra={"comfy_stopped": stopped})
    return {"success": True, "shutdown": True, "comfy_stopped": stopped, "refresh_worker": True}
