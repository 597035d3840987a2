"""The warm-up workflow (``COMFYFLEET_WARMUP_WORKFLOW``), run once in the background.

The runpod SDK owns the event loop jobs run on and starts it only once the worker is set up, so
the warm-up gets a thread and a loop of its own. It waits for the ComfyUI the worker launched to
be ready (or, without one, for ``COMFYUI_URL`` to answer) and runs the workflow once; the
`WarmupState` it fills is plain attributes that the ``ready`` and ``health`` actions read.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from comfyfleet.comfy.supervisor import Supervisor
from comfyfleet.config import Settings
from comfyfleet.errors import ComfyUnavailable
from comfyfleet.runtime.warmup import WarmupState, warm_up

log = logging.getLogger(__name__)


def start(settings: Settings, supervisor: Supervisor | None) -> WarmupState | None:
    """Start the warm-up thread; None when no warm-up workflow is configured."""
    if settings.warmup_workflow is None:
        return None
    state = WarmupState()
    threading.Thread(
        target=_run, args=(state, settings, supervisor), name="comfy-warmup", daemon=True
    ).start()
    return state


def _run(state: WarmupState, settings: Settings, supervisor: Supervisor | None) -> None:
    if supervisor is not None:
        try:
            supervisor.wait_ready_blocking()
        except ComfyUnavailable as exc:
            state.finish("failed", f"ComfyUI never became ready: {exc.message}")
            log.error("warm-up skipped: %s", state.reason)
            return
    log.info("warm-up started", extra={"workflow": str(settings.warmup_workflow)})
    asyncio.run(
        warm_up(
            state, settings.comfy_url, settings.warmup_workflow, timeout=settings.warmup_timeout
        )
    )
