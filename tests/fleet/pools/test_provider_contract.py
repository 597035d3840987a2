"""One contract, every provider: start a worker that becomes healthy, see it alive and listed
(by another instance too: adoption), stop it; a worker that dies says why."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from comfyfleet.fleet.pools.provider import LABEL_POOL, LABEL_WORKER, WorkerStartError

from .cases import Case, worker_spec


async def test_started_worker_becomes_healthy_and_is_listed_then_stopped(case: Case) -> None:
    provider = case.provider()
    handle = await provider.start(worker_spec(provider, "w0-aaa"))
    url = await provider.wait_healthy(handle, timeout=60)
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(f"{url}/system_stats")).status_code == 200
    assert (await provider.health(handle)).alive

    # A fresh provider (a restarted gateway) lists it, with its labels: adoption.
    other = case.provider()
    owned = {h.id: h for h in await other.list_owned()}
    assert set(owned) == {"w0-aaa"}
    assert owned["w0-aaa"].labels[LABEL_POOL] == "p"
    assert owned["w0-aaa"].labels[LABEL_WORKER] == "w0-aaa"
    assert (await other.health(owned["w0-aaa"])).alive

    await provider.stop(handle)
    assert not (await provider.health(handle)).alive
    assert await other.list_owned() == []
    with pytest.raises(httpx.HTTPError):
        async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
            await http.get(f"{url}/system_stats")
    await provider.stop(handle)  # idempotent


async def test_other_pools_and_owners_are_not_listed(case: Case) -> None:
    mine = case.provider(name="mine")
    theirs = case.provider(name="theirs")
    handle = await theirs.start(worker_spec(theirs, "w0-bbb"))
    await theirs.wait_healthy(handle, timeout=60)
    assert await mine.list_owned() == []
    assert [h.id for h in await theirs.list_owned()] == ["w0-bbb"]


async def test_a_worker_that_dies_at_start_fails_with_the_reason_and_keeps_its_logs(
    case: Case,
) -> None:
    provider = case.provider(crash=True)
    handle = await provider.start(worker_spec(provider, "w0-ccc"))
    with pytest.raises(WorkerStartError) as info:
        await provider.wait_healthy(handle, timeout=60)
    assert "died while starting" in info.value.message
    health = await provider.health(handle)
    assert not health.alive
    assert "3" in (health.reason or "")
    if case.has_logs:
        assert "boom at start" in await provider.logs(handle)
    await provider.stop(handle)


async def test_a_worker_killed_while_running_is_seen_gone(case: Case) -> None:
    provider = case.provider()
    handle = await provider.start(worker_spec(provider, "w0-ddd"))
    url = await provider.wait_healthy(handle, timeout=60)
    async with httpx.AsyncClient(trust_env=False) as http:
        with contextlib.suppress(httpx.HTTPError):  # the test server exits with code 86
            await http.post(f"{url}/_testing/die")

    async def gone() -> str | None:
        while (health := await provider.health(handle)).alive:
            await asyncio.sleep(0.05)  # the provider's own view, probed; bounded below
        return health.reason

    reason = await asyncio.wait_for(gone(), 30)
    assert reason and "86" in reason
    await provider.stop(handle)


async def test_two_workers_get_their_own_address(case: Case) -> None:
    provider = case.provider()
    first = await provider.start(worker_spec(provider, "w0-eee", 0))
    second = await provider.start(worker_spec(provider, "w1-fff", 1))
    urls = await asyncio.gather(
        provider.wait_healthy(first, timeout=60), provider.wait_healthy(second, timeout=60)
    )
    assert urls[0] != urls[1]
    assert {h.id for h in await provider.list_owned()} == {"w0-eee", "w1-fff"}
