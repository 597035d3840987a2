"""Backend state: health checks with backoff, drain, slots."""

from __future__ import annotations

import asyncio
import time

import pytest

from comfyfleet.fleet.backend import Backend, Backoff


def test_backoff_grows_exponentially_and_caps() -> None:
    backoff = Backoff(initial=0.5, factor=2, maximum=4, jitter=0)
    assert [backoff.delay(n) for n in range(6)] == [0, 0.5, 1, 2, 4, 4]
    jittered = Backoff(initial=1, jitter=0.1)
    assert all(0.9 <= jittered.delay(1) <= 1.1 for _ in range(50))


async def test_unchecked_backend_is_checked_before_first_claim() -> None:
    calls: list[float] = []

    async def check() -> None:
        calls.append(time.monotonic())

    backend = Backend("b", kind="local", check=check)
    assert not backend.healthy
    assert await backend.wait_ready()
    assert len(calls) == 1 and backend.healthy
    assert await backend.wait_ready()  # healthy: no second check
    assert len(calls) == 1


async def test_failed_checks_back_off_until_one_passes() -> None:
    outcomes = [False, False, True]
    calls: list[float] = []

    async def check() -> None:
        calls.append(time.monotonic())
        if not outcomes.pop(0):
            raise ConnectionRefusedError("down")

    backend = Backend("b", kind="local", check=check, backoff=Backoff(0.02, 2, 1, jitter=0))
    assert await backend.wait_ready()
    assert len(calls) == 3 and backend.healthy and backend.failures == 0
    # The waits between checks follow the backoff (at least; never a busy loop).
    assert calls[1] - calls[0] >= 0.02 and calls[2] - calls[1] >= 0.04
    assert backend.snapshot()["state"] == "idle"


async def test_unhealthy_backend_reports_state_and_last_error() -> None:
    async def check() -> None:
        raise ConnectionRefusedError("nobody home")

    backoff = Backoff(60, maximum=120)
    backend = Backend("b", kind="local", url="http://x", check=check, backoff=backoff)
    assert not await backend.check()
    snap = backend.snapshot()
    assert snap["state"] == "unhealthy" and "nobody home" in snap["last_error"]
    assert snap["next_check_in"] > 50
    waiter = asyncio.create_task(backend.wait_ready())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    backend.stop()
    assert await waiter is False


async def test_drain_blocks_claims_until_undrain() -> None:
    backend = Backend("b", kind="local")
    backend.started("t1")
    backend.drain()
    assert backend.state == "draining"
    waiter = asyncio.create_task(backend.wait_ready())
    backend.finished("t1", ok=True)
    await asyncio.sleep(0.01)
    assert backend.state == "drained" and not waiter.done()
    backend.undrain()
    assert await waiter is True
    assert backend.snapshot()["executed"] == 1


@pytest.mark.parametrize("capacity", [1, 3])
async def test_slots_limit_concurrent_tasks(capacity: int) -> None:
    backend = Backend("b", kind="runpod", capacity=capacity)
    for i in range(capacity):
        assert await backend.wait_ready()
        backend.started(f"t{i}")
    assert backend.state == "busy"
    waiter = asyncio.create_task(backend.wait_ready())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    backend.finished("t0", ok=False)
    assert await waiter is True
