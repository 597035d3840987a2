"""Local agents in one process: dispatch to idle backends, failure semantics, health, drain,
deadline and cancel -- real SQLite queue, real test servers."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import (
    executions,
    finished,
    make_fleet,
    prompt_started,
    queue_depth,
    running,
    stopped_claiming,
    submit,
    submit_followed,
)


@pytest.mark.parametrize("depth", [0, 2])
async def test_tasks_run_once_each_and_spread_over_idle_backends(
    sqlite_queue, start_servers, settings_for, depth
) -> None:
    servers = await start_servers(2, job_seconds=0.05)
    settings = settings_for([s.url for s in servers], prefetch_depth=depth)
    async with (
        queue_depth(servers[0]) as depth0,
        queue_depth(servers[1]) as depth1,
        make_fleet(settings, sqlite_queue) as fleet,
    ):
        tasks = await submit(sqlite_queue, 8)
        done = await finished(sqlite_queue, [t.id for t in tasks])
        backends = {b["name"]: b for b in fleet.backends()}
    assert {t.status for t in done} == {"succeeded"}
    outs = [s.output_dir for s in servers]
    assert [executions(outs, t.id) for t in done] == [1] * 8
    assert {t.backend for t in done} == set(backends)  # both backends dispatched
    assert sum(b["executed"] for b in backends.values()) == 8
    # Each ComfyUI never held more than its running prompt plus `depth` waiting ones (with
    # depth 0 the next task is only claimed once the previous prompt is done).
    assert 1 <= depth0[0] <= 1 + depth and 1 <= depth1[0] <= 1 + depth
    # Artifacts went through the gateway's store.
    artifact = done[0].result["artifacts"][0]
    assert artifact["url"].startswith(f"/api/v1/tasks/{done[0].id}/artifacts/")
    assert (settings.data_dir / "artifacts" / done[0].id).is_dir()


async def test_node_error_fails_at_once_with_the_precise_error(
    sqlite_queue, start_servers, settings_for
) -> None:
    servers = await start_servers(2)
    async with make_fleet(settings_for([s.url for s in servers]), sqlite_queue):
        [task] = await submit(sqlite_queue, 1, fail=True)
        [done] = await finished(sqlite_queue, [task.id])
    assert done.status == "failed" and done.attempts == 1
    assert done.error["code"] == "node_execution_error"
    assert "boom on purpose" in done.error["message"]
    assert done.error["backend"] == done.backend


async def test_invalid_workflow_fails_at_once(sqlite_queue, start_servers, settings_for) -> None:
    servers = await start_servers(1)
    async with make_fleet(settings_for([servers[0].url]), sqlite_queue):
        payload = {"spec": {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}}
        task, _ = await sqlite_queue.submit(payload)
        [done] = await finished(sqlite_queue, [task.id])
        bad, _ = await sqlite_queue.submit({"spec": {"prompt": "no workflow"}})
        [bad] = await finished(sqlite_queue, [bad.id])
    assert done.status == "failed" and done.attempts == 1
    assert done.error["code"] == "workflow_invalid"
    assert bad.status == "failed" and bad.error["code"] == "invalid_request"


async def test_backend_dying_mid_task_retries_on_another_backend(
    sqlite_queue, start_servers, settings_for
) -> None:
    a, b = await start_servers(2, job_seconds=30)
    settings = settings_for([f"a={a.url}", f"b={b.url}"])
    async with make_fleet(settings, sqlite_queue) as fleet:
        fleet.drain("b")  # the first attempt must land on a
        await stopped_claiming(fleet.backend("b"))
        task, sub = await submit_followed(sqlite_queue, fleet)
        await prompt_started(sub)
        b.faults.job_seconds = 0
        fleet.undrain("b")
        await a.die()  # a's ComfyUI crashes mid-task
        [done] = await finished(sqlite_queue, [task.id])
        state_a = fleet.backend("a").snapshot()
    assert done.status == "succeeded" and done.backend == "b" and done.attempts == 2
    assert executions([b.output_dir], task.id) == 1
    assert state_a["state"] == "unhealthy" and state_a["failed"] == 1


async def test_unreachable_backend_is_not_claimed_from_until_healthy(
    sqlite_queue, start_servers, settings_for
) -> None:
    [good] = await start_servers(1)
    [down] = await start_servers(1)
    await down.stop()  # nothing listens on its port now
    settings = settings_for([f"good={good.url}", f"down={down.url}"])
    async with make_fleet(settings, sqlite_queue) as fleet:
        tasks = await submit(sqlite_queue, 4)
        done = await finished(sqlite_queue, [t.id for t in tasks])
        assert {t.backend for t in done} == {"good"}
        assert fleet.backend("down").snapshot()["state"] == "unhealthy"
        assert all(t.attempts == 1 for t in done)
        # It comes back: the next health check (with backoff) finds it and it claims again.
        await down.start()
        fleet.drain("good")
        await stopped_claiming(fleet.backend("good"))
        [late] = await submit(sqlite_queue, 1)
        [late] = await finished(sqlite_queue, [late.id])
    assert late.status == "succeeded" and late.backend == "down"


async def test_drain_finishes_the_current_task_and_claims_no_more(
    sqlite_queue, start_servers, settings_for
) -> None:
    a, b = await start_servers(2, job_seconds=0.3)
    async with make_fleet(settings_for([f"a={a.url}", f"b={b.url}"]), sqlite_queue) as fleet:
        fleet.drain("b")
        await stopped_claiming(fleet.backend("b"))
        [first] = await submit(sqlite_queue, 1)
        await running(sqlite_queue, first.id)
        fleet.drain("a")
        await stopped_claiming(fleet.backend("a"))  # (a is busy: nothing in flight anyway)
        assert fleet.backend("a").snapshot()["state"] == "draining"
        fleet.undrain("b")
        rest = await submit(sqlite_queue, 3)
        done = await finished(sqlite_queue, [first.id] + [t.id for t in rest])
        assert fleet.backend("a").snapshot()["state"] == "drained"
    assert [t.status for t in done] == ["succeeded"] * 4
    assert done[0].backend == "a"
    assert {t.backend for t in done[1:]} == {"b"}


async def test_deadline_interrupts_the_prompt_and_fails_the_task(
    sqlite_queue, start_servers, settings_for
) -> None:
    [srv] = await start_servers(1, job_seconds=60)
    async with make_fleet(settings_for([srv.url]), sqlite_queue):
        [slow] = await submit(sqlite_queue, 1, timeout=0.5)
        [done] = await finished(sqlite_queue, [slow.id])
        assert done.status == "failed" and done.attempts == 1
        assert done.error["code"] == "timeout"
        # The backend is free again at once: the interrupted prompt is gone.
        srv.faults.job_seconds = 0
        [quick] = await submit(sqlite_queue, 1)
        [quick] = await finished(sqlite_queue, [quick.id])
    assert quick.status == "succeeded"
    assert executions([srv.output_dir], slow.id) == 0


async def test_cancel_interrupts_a_running_task(sqlite_queue, start_servers, settings_for) -> None:
    [srv] = await start_servers(1, job_seconds=60)
    settings = settings_for([srv.url], prefetch_depth=0)  # the second task stays in our queue
    async with make_fleet(settings, sqlite_queue) as fleet:
        [task, queued] = await submit(sqlite_queue, 2)
        await running(sqlite_queue, task.id)
        assert (await fleet.cancel(queued.id)).status == "cancelled"
        await fleet.cancel(task.id)
        [done] = await finished(sqlite_queue, [task.id])
        srv.faults.job_seconds = 0
        [after] = await submit(sqlite_queue, 1)
        [after] = await finished(sqlite_queue, [after.id])
    assert done.status == "cancelled"
    assert after.status == "succeeded"
    assert executions([srv.output_dir], task.id) == 0


async def test_events_bus_carries_status_and_progress(
    sqlite_queue, start_servers, settings_for
) -> None:
    [srv] = await start_servers(1)
    async with make_fleet(settings_for([srv.url]), sqlite_queue) as fleet:
        [task] = await submit(sqlite_queue, 1, slow_steps=3)
        sub = fleet.events.subscribe(task.id)
        events = await asyncio.wait_for(_collect(sub), 30)
    statuses = [e["status"] for e in events if e["type"] == "status"]
    assert statuses == ["running", "succeeded"]
    assert any(e["type"] == "progress" and e.get("max") == 3 for e in events)


async def _collect(sub):
    return [event async for event in sub]
