"""Pipelined dispatch: each local ComfyUI keeps ``prefetch_depth`` prompts of ours waiting in its
own queue behind the running one -- real SQLite queue, real test servers, whose prompt queues
are read directly (`ComfyQueue`)."""

from __future__ import annotations

import contextlib

from comfyfleet.errors import Conflict

from .helpers import (
    ComfyQueue,
    executions,
    finished,
    make_fleet,
    payload,
    prompt_started,
    stopped_claiming,
    submit,
    submit_followed,
)


async def test_depth_prompts_wait_in_comfyui_while_one_runs(
    sqlite_queue, start_servers, settings_for
) -> None:
    [srv] = await start_servers(1, job_seconds=60)
    settings = settings_for([f"a={srv.url}"], prefetch_depth=2)
    async with ComfyQueue(srv).following() as comfy, make_fleet(settings, sqlite_queue) as fleet:
        tasks = await submit(sqlite_queue, 4)
        running, pending = await comfy.until(lambda r, p: len(r) == 1 and len(p) == 2)
        fourth = await sqlite_queue.get(tasks[3].id)
        snapshot = fleet.backend("a").snapshot()
        for task in tasks:  # let the fleet stop at once
            await fleet.cancel(task.id)
    # The first three tasks are in ComfyUI (one running, two waiting, in the order their
    # preparation finished); the fourth waits in our queue until a slot frees.
    assert len(running) == 1 and sorted(running + pending) == sorted(t.id for t in tasks[:3])
    assert fourth.status == "queued"
    assert snapshot["state"] == "busy" and snapshot["depth"] == 2
    assert sorted(snapshot["running"]) == sorted(t.id for t in tasks[:3])


async def test_cancel_of_a_prefetched_task_removes_exactly_its_prompt(
    sqlite_queue, start_servers, settings_for
) -> None:
    [srv] = await start_servers(1, job_seconds=60)
    settings = settings_for([srv.url], prefetch_depth=2)
    async with ComfyQueue(srv).following() as comfy, make_fleet(settings, sqlite_queue) as fleet:
        await submit(sqlite_queue, 3)
        [first], [second, third] = await comfy.until(lambda r, p: len(r) == 1 and len(p) == 2)
        await fleet.cancel(second)
        # Only that prompt left ComfyUI's queue; the running one was not interrupted.
        running, pending = await comfy.until(lambda r, p: second not in p)
        [cancelled] = await finished(sqlite_queue, [second])
        srv.faults.job_seconds = 0
        srv.interrupt()  # (the running one would take a minute; it fails now)
        [done_first, done_third] = await finished(sqlite_queue, [first, third])
    assert running == [first] and pending == [third]
    assert cancelled.status == "cancelled" and cancelled.attempts == 1
    assert done_third.status == "succeeded", done_third.error
    assert executions([srv.output_dir], second) == 0
    assert executions([srv.output_dir], third) == 1
    assert done_first.status in ("failed", "succeeded")


async def test_a_dead_backend_hands_back_its_prefetched_tasks_without_spending_attempts(
    sqlite_queue, start_servers, settings_for
) -> None:
    a, b = await start_servers(2, job_seconds=60)
    settings = settings_for([f"a={a.url}", f"b={b.url}"], prefetch_depth=2, lease_seconds=60)
    async with ComfyQueue(a).following() as comfy, make_fleet(settings, sqlite_queue) as fleet:
        fleet.drain("b")
        await stopped_claiming(fleet.backend("b"))
        first, sub = await submit_followed(sqlite_queue, fleet)
        await prompt_started(sub)  # the first prompt runs ...
        second, third = await submit(sqlite_queue, 2)
        await comfy.until(lambda r, p: len(p) == 2)  # ... and the other two wait inside a
        await a.die()
        # Without any lease running out (60 s): the prefetched two are queued again, their
        # attempts uncounted; the running one is requeued as a failed attempt.
        back = [await _requeued(sqlite_queue, t.id) for t in (first, second, third)]
        b.faults.job_seconds = 0
        fleet.undrain("b")
        done = await finished(sqlite_queue, [first.id, second.id, third.id])
    assert [t.attempts for t in back] == [1, 0, 0]
    assert back[0].error["code"] == "comfy_connection_lost"
    assert [t.status for t in done] == ["succeeded"] * 3
    assert [t.backend for t in done] == ["b"] * 3
    assert [t.attempts for t in done] == [2, 1, 1]


async def test_a_higher_priority_task_waits_behind_at_most_the_prefetched_ones(
    sqlite_queue, start_servers, settings_for
) -> None:
    [srv] = await start_servers(1, job_seconds=60)
    settings = settings_for([srv.url], prefetch_depth=1)
    async with ComfyQueue(srv).following() as comfy, make_fleet(settings, sqlite_queue) as fleet:
        low = await submit(sqlite_queue, 4)
        [_], [prefetched] = await comfy.until(lambda r, p: len(r) == 1 and len(p) == 1)
        high, _ = await sqlite_queue.submit(payload("thigh"), task_id="thigh", priority=10)
        srv.interrupt()  # the running one ends; a slot frees
        running, pending = await comfy.until(lambda r, p: len(p) == 1 and p != [prefetched])
        for task in [*low, high]:
            with contextlib.suppress(Conflict):  # (the interrupted one has finished)
                await fleet.cancel(task.id)
    # The high one waited behind the prefetched low one only, not behind the other lows.
    assert running == [prefetched] and pending == [high.id]
    assert prefetched in {t.id for t in low[:2]}


async def _requeued(queue, task_id: str):
    async for task in queue.watch(task_id):
        if task.status == "queued":
            return task
    raise AssertionError(f"{task_id} finished instead of being requeued")


async def test_prefetched_tasks_keep_their_leases_while_they_wait_in_comfyui(
    sqlite_queue, start_servers, settings_for
) -> None:
    # Each prompt takes 2 s; the last of three waits about 4 s in ComfyUI's queue, more than
    # two leases of 1.5 s: only its heartbeats keep the reaper from requeueing it.
    [srv] = await start_servers(1, job_seconds=2.0)
    settings = settings_for([srv.url], prefetch_depth=2, lease_seconds=1.5)
    async with ComfyQueue(srv).following() as comfy, make_fleet(settings, sqlite_queue):
        tasks = await submit(sqlite_queue, 3)
        await comfy.until(lambda r, p: len(r) == 1 and len(p) == 2)
        done = await finished(sqlite_queue, [t.id for t in tasks])
    assert [t.status for t in done] == ["succeeded"] * 3
    assert [t.attempts for t in done] == [1, 1, 1]
    assert all(executions([srv.output_dir], t.id) == 1 for t in tasks)
