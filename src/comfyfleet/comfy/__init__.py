"""One ComfyUI server: HTTP client, websocket event stream, typed messages."""

from comfyfleet.comfy.client import Client, ProgressCallback
from comfyfleet.comfy.events import EventStream, Watch
from comfyfleet.comfy.messages import Event, HistoryEntry, Preview

__all__ = ["Client", "Event", "EventStream", "HistoryEntry", "Preview", "ProgressCallback", "Watch"]
