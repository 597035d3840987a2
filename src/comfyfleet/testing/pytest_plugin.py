"""Pytest fixtures for testing against the ComfyUI test server.

Not registered globally. Use them from a conftest.py, either all at once::

    pytest_plugins = ["comfyfleet.testing.pytest_plugin"]

or by importing the ones you need (importing a fixture into a conftest or test module makes it
available there)::

    from comfyfleet.testing.pytest_plugin import comfy_server, comfy_server_process

Fixtures (each a fresh server with its own folders under ``tmp_path``):

``comfy_server``
    async; a started :class:`~comfyfleet.testing.ComfyTestServer` on the test's event loop.
``comfy_server_thread``
    sync; the same server running in a background thread (``.url``, ``.faults``, ``.die()``).
``comfy_server_process``
    sync; ``python -m comfyfleet.testing`` in a child process
    (:class:`~comfyfleet.testing.ComfyTestProcess`: ``.url``, ``.set_faults()``, ``.die()``,
    ``.kill()``) -- for code that must see a real process exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from comfyfleet.testing.runners import ComfyTestProcess, ThreadedComfyTestServer
from comfyfleet.testing.server import ComfyTestServer


@pytest_asyncio.fixture
async def comfy_server(tmp_path) -> AsyncIterator[ComfyTestServer]:
    async with ComfyTestServer(root=tmp_path / "comfyui") as server:
        yield server


@pytest.fixture
def comfy_server_thread(tmp_path) -> Iterator[ThreadedComfyTestServer]:
    with ComfyTestServer(root=tmp_path / "comfyui").run_in_thread() as server:
        yield server


@pytest.fixture
def comfy_server_process(tmp_path) -> Iterator[ComfyTestProcess]:
    with ComfyTestServer.start_subprocess(root=tmp_path / "comfyui") as process:
        yield process
