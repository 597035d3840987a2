"""Provider cases for the contract suite."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .cases import CRASH, Case, local_options


@pytest.fixture(params=["local"])
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    made = Case("local", tmp_path / "data", local_options(), {**local_options(), "command": CRASH})
    yield made
    for provider in made.made:
        for handle in await provider.list_owned():
            with contextlib.suppress(Exception):
                await provider.stop(handle)
        await provider.close()
