"""A ComfyUI 0.8.0 test server: the recorded protocol, real image nodes, injectable faults.

    async with ComfyTestServer(root=tmp_path) as srv:
        ...  # talk to srv.url / srv.ws_url like to a real ComfyUI
        srv.faults.node_delay = 0.5

``ComfyTestServer(...).run_in_thread()`` and ``ComfyTestServer.start_subprocess(...)`` serve sync
tests; ``python -m comfyfleet.testing --port 8188`` runs it standalone. Pytest fixtures live in
:mod:`comfyfleet.testing.pytest_plugin`. See docs/testing.md.
"""

from comfyfleet.testing.faults import Faults
from comfyfleet.testing.nodes import NODES, TEST_CLASSES
from comfyfleet.testing.runners import ComfyTestProcess, ThreadedComfyTestServer
from comfyfleet.testing.server import ComfyTestServer

IMPLEMENTED_CLASSES = tuple(NODES)
"""Node classes the server really executes (the rest validate, then fail when executed)."""

__all__ = [
    "IMPLEMENTED_CLASSES",
    "TEST_CLASSES",
    "ComfyTestProcess",
    "ComfyTestServer",
    "Faults",
    "ThreadedComfyTestServer",
]
