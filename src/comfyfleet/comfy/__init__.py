"""One ComfyUI server: HTTP client, websocket event stream, typed messages, its process.

Names are imported on first use: `comfyfleet worker` imports ``.supervisor`` to launch ComfyUI
before anything else, and that must not pay for aiohttp and the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyfleet.comfy.client import Client, ProgressCallback
    from comfyfleet.comfy.events import EventStream, Watch
    from comfyfleet.comfy.messages import Event, HistoryEntry, Preview

_EXPORTS = {
    "Client": "client",
    "ProgressCallback": "client",
    "EventStream": "events",
    "Watch": "events",
    "Event": "messages",
    "HistoryEntry": "messages",
    "Preview": "messages",
}

__all__ = ["Client", "Event", "EventStream", "HistoryEntry", "Preview", "ProgressCallback", "Watch"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
