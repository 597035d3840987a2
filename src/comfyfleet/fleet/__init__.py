"""Who executes queued tasks: local agents (one per ComfyUI URL, in the gateway process),
remote pull agents (``comfyfleet agent``, HTTP only) and a RunPod executor, all claiming from
the queue event-driven, with health checks, backoff and drain. See ``docs/fleet.md``."""

from comfyfleet.fleet.agent import Agent, Lease, Runner, TaskSource, Verdict
from comfyfleet.fleet.backend import Backend, Backoff
from comfyfleet.fleet.events import Subscription, TaskEvents
from comfyfleet.fleet.manager import Fleet

__all__ = [
    "Agent",
    "Backend",
    "Backoff",
    "Fleet",
    "Lease",
    "Runner",
    "Subscription",
    "TaskEvents",
    "TaskSource",
    "Verdict",
]
