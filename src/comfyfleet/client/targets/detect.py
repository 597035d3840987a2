"""Which kind of target a URL is, when the caller does not say: a RunPod endpoint id (or
``runpod://ID``, or an ``*.runpod.ai`` URL), else what the server itself answers — the
gateway's and the runpod SDK's OpenAPI titles, or ComfyUI's ``/system_stats``."""

from __future__ import annotations

from typing import Literal

import httpx

from comfyfleet.errors import InvalidRequest, ServiceUnavailable

Kind = Literal["gateway", "runpod", "worker", "comfy"]
KINDS: tuple[Kind, ...] = ("gateway", "runpod", "worker", "comfy")


def static_kind(target: str) -> Kind | None:
    """The kind when the string alone tells."""
    if target.startswith("runpod://") or "://" not in target:
        return "runpod"
    host = httpx.URL(target).host
    if host == "runpod.ai" or host.endswith(".runpod.ai"):
        return "runpod"
    return None


async def probe_kind(url: str, timeout: float = 10.0) -> Kind:
    """Ask the server what it is (two small GETs at most)."""
    base = url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            answer = await http.get(base + "/openapi.json")
            if answer.status_code == 200:
                title = str((answer.json().get("info") or {}).get("title", ""))
                if title == "comfyfleet gateway":
                    return "gateway"
                if title.lower().startswith("runpod"):
                    return "worker"
            stats = await http.get(base + "/system_stats")
            if stats.status_code == 200 and "system" in stats.json():
                return "comfy"
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"{url} cannot be reached: {exc}", url=url) from exc
    except ValueError:
        pass
    raise InvalidRequest(
        f"cannot tell what {url} is (not a comfyfleet gateway, a worker's local API or a "
        f"ComfyUI); pass kind= one of {', '.join(KINDS)}",
        field="kind",
    )
