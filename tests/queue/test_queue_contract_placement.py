"""The queue contract, placement part: a claimer's `Fit` (the model files it has, the checkpoint
it ran last) filters and orders what it claims, never so that a task starves; on every engine."""

from __future__ import annotations

import asyncio

from comfyfleet.queue import Fit, Queue
from comfyfleet.queue.testing import FakeClock, spy_before_wait

LEASE = 30.0
A = "checkpoints/a.safetensors"
B = "checkpoints/b.safetensors"
LORA = "loras/x.safetensors"


async def test_submit_keeps_the_placement(queue: Queue) -> None:
    task, _ = await queue.submit({"n": 1}, models=[A, LORA], checkpoint=A)
    assert (task.models, task.checkpoint) == ([A, LORA], A)
    assert (await queue.get(task.id)).models == [A, LORA]
    bare, _ = await queue.submit({"n": 2}, models=[])
    assert (bare.models, bare.checkpoint) == (None, None)


async def test_a_claimer_takes_only_tasks_whose_models_it_has(queue: Queue) -> None:
    needs_a, _ = await queue.submit({"n": 1}, models=[A, LORA], checkpoint=A)
    needs_b, _ = await queue.submit({"n": 2}, models=[B], checkpoint=B)
    anyone, _ = await queue.submit({"n": 3})
    has_b = Fit(have=frozenset({B, "vae/v.safetensors"}))
    assert (await queue.claim("b", LEASE, fit=has_b)).id == needs_b.id
    assert (await queue.claim("b", LEASE, fit=has_b)).id == anyone.id
    assert await queue.claim("b", LEASE, fit=has_b) is None  # needs_a: it lacks the LoRA
    has_a = Fit(have=frozenset({A}))
    assert await queue.claim("a", LEASE, fit=has_a) is None  # A alone is not enough
    has_all = Fit(have=frozenset({A, LORA}))
    assert (await queue.claim("a", LEASE, fit=has_all)).id == needs_a.id


async def test_a_claimer_without_fit_or_catalogue_takes_any_task(queue: Queue) -> None:
    first, _ = await queue.submit({"n": 1}, models=[A], checkpoint=A)
    second, _ = await queue.submit({"n": 2}, models=[B], checkpoint=B)
    assert (await queue.claim("x", LEASE)).id == first.id
    assert (await queue.claim("y", LEASE, fit=Fit(have=None, warm=A))).id == second.id


async def test_a_task_nobody_claims_for_its_models_goes_to_anyone_after_the_wait(
    queue: Queue, clock: FakeClock
) -> None:
    task, _ = await queue.submit({"n": 1}, models=[A], checkpoint=A)
    lacks = Fit(have=frozenset({B}))
    assert await queue.claim("b", LEASE, fit=lacks) is None
    clock.advance(queue.placement_wait - 1)
    assert await queue.claim("b", LEASE, fit=lacks) is None
    clock.advance(1)
    assert (await queue.claim("b", LEASE, fit=lacks)).id == task.id


async def test_a_waiting_claimer_wakes_when_the_placement_wait_ends(
    queue: Queue, clock: FakeClock
) -> None:
    """claim(wait=) sleeps until the skipped task becomes its to take, not for the whole
    wait: the queue's next_run_at counts the placement wait (moved on the fake clock)."""
    task, _ = await queue.submit({"n": 1}, models=[A])
    next_at = await queue._next_run_at(None, Fit(have=frozenset({B})))  # type: ignore[attr-defined]
    assert (next_at - task.run_at).total_seconds() == queue.placement_wait
    assert await queue._next_run_at(None, Fit(have=frozenset({A}))) == task.run_at  # type: ignore[attr-defined]
    waiting = spy_before_wait(queue)
    claim = asyncio.create_task(queue.claim("b", LEASE, fit=Fit(have=frozenset({B})), wait=60))
    await asyncio.wait_for(waiting.wait(), 10)
    assert not claim.done()
    clock.advance(queue.placement_wait)
    await queue.submit({"n": 2}, priority=-1, models=[A])  # a wake-up; the old task comes first
    got = await asyncio.wait_for(claim, 10)
    assert got is not None and got.id == task.id


async def test_a_warm_claimer_takes_its_checkpoint_first_within_a_priority(queue: Queue) -> None:
    have = frozenset({A, B})
    ids = {}
    for n, ckpt in enumerate([A, B, A, B]):
        ids[n] = (await queue.submit({"n": n}, models=[ckpt], checkpoint=ckpt))[0].id
    warm_b = Fit(have=have, warm=B)
    warm_a = Fit(have=have, warm=A)
    assert (await queue.claim("b", LEASE, fit=warm_b)).id == ids[1]
    assert (await queue.claim("a", LEASE, fit=warm_a)).id == ids[0]
    assert (await queue.claim("b", LEASE, fit=warm_b)).id == ids[3]
    assert (await queue.claim("b", LEASE, fit=warm_b)).id == ids[2]  # none left: FIFO


async def test_warmth_never_beats_priority(queue: Queue) -> None:
    cold, _ = await queue.submit({"n": 1}, priority=5, checkpoint=B)
    await queue.submit({"n": 2}, priority=0, checkpoint=A)
    assert (await queue.claim("a", LEASE, fit=Fit(warm=A))).id == cold.id


async def test_warmth_looks_only_through_the_affinity_window(queue: Queue) -> None:
    for n in range(queue.affinity_window):
        await queue.submit({"n": n}, checkpoint=B)
    far, _ = await queue.submit({"n": "far"}, checkpoint=A)
    head = await queue.claim("a", LEASE, fit=Fit(warm=A))
    assert head is not None and head.payload == {"n": 0}  # A is beyond the window
    near = await queue.claim("a", LEASE, fit=Fit(warm=A))
    assert near is not None and near.id == far.id  # now it is within it


async def test_an_overdue_task_beats_a_warm_one(queue: Queue, clock: FakeClock) -> None:
    """A warm claimer cannot keep an older task of another checkpoint waiting for ever."""
    old, _ = await queue.submit({"n": "old"}, checkpoint=B)
    clock.advance(queue.placement_wait)
    await queue.submit({"n": "new"}, checkpoint=A)
    assert (await queue.claim("a", LEASE, fit=Fit(warm=A))).id == old.id


async def test_a_retried_task_keeps_its_placement(queue: Queue) -> None:
    task, _ = await queue.submit({"n": 1}, models=[A], checkpoint=A)
    fit = Fit(have=frozenset({A}))
    claimed = await queue.claim("a", LEASE, fit=fit)
    assert claimed is not None
    back = await queue.fail(task.id, "a", {"code": "x"}, retryable=True)
    assert (back.status, back.models, back.checkpoint) == ("queued", [A], A)
    assert await queue.claim("b", LEASE, fit=Fit(have=frozenset({B}))) is None
    assert (await queue.claim("a", LEASE, fit=fit)).id == task.id


async def test_targets_still_apply_to_a_placed_claim(queue: Queue) -> None:
    await queue.submit({"n": 1}, target="gpu-b", models=[A])
    mine, _ = await queue.submit({"n": 2}, target="gpu-a", models=[A])
    fit = Fit(have=frozenset({A}))
    assert (await queue.claim("a", LEASE, targets=["gpu-a"], fit=fit)).id == mine.id
    assert await queue.claim("a", LEASE, targets=["gpu-a"], fit=fit) is None


async def test_queued_models_counts_the_waiting_tasks_per_file_list(queue: Queue) -> None:
    for models in ([A], [B, LORA], [A], None, [B, LORA]):
        await queue.submit({"m": models}, models=models)
    claimed = await queue.claim("x", LEASE, fit=Fit(have=frozenset({B, LORA})))
    assert claimed is not None and claimed.models == [B, LORA]  # running: not counted
    counts = {tuple(m or ()): n for m, n in await queue.queued_models()}
    assert counts == {(A,): 2, (B, LORA): 1, (): 1}
