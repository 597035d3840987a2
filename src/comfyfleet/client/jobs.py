"""A submitted job: `AsyncJob` (and its blocking twin `Job`) — ``wait()``, ``progress()``,
``status()``, ``cancel()``.

One pump per job reads the target's `follow` stream and fans it out, so ``progress()`` and
``wait()`` can run together (and several progress iterators at once) while the target is asked
only once — which the runpod SDK's local API requires (its ``/status`` runs the job)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from comfyfleet.client.results import ProgressEvent, Result

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from comfyfleet.client.targets.base import Target

_END = object()


class AsyncJob:
    def __init__(self, target: Target, job_id: str) -> None:
        self.id = job_id
        self.target = target
        self._history: list[ProgressEvent] = []
        self._listeners: list[asyncio.Queue[Any]] = []
        self._result: Result | None = None
        self._failure: BaseException | None = None
        self._done = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id} on {self.target.kind}>"

    def _start(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name=f"follow {self.id}")

    async def _run(self) -> None:
        try:
            async for item in self.target.follow(self.id):
                if isinstance(item, Result):
                    self._result = item
                    break
                self._history.append(item)
                for listener in self._listeners:
                    listener.put_nowait(item)
        except Exception as exc:  # surfaces in wait() and progress()
            self._failure = exc
        finally:
            self._done.set()
            for listener in self._listeners:
                listener.put_nowait(_END)

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        """Every progress event from the start (replayed), then live ones, until it ends."""
        self._start()
        listener: asyncio.Queue[Any] = asyncio.Queue()
        backlog = list(self._history)
        if self._done.is_set():
            listener.put_nowait(_END)
        self._listeners.append(listener)
        try:
            for event in backlog:
                yield event
            while (item := await listener.get()) is not _END:
                yield item
        finally:
            self._listeners.remove(listener)
        if self._failure is not None:
            raise self._failure

    async def wait(self, timeout: float | None = None, *, check: bool = True) -> Result:
        """The final `Result`; with ``check`` (default) a failed or cancelled job raises its
        error (our error class, the server's message intact). ``TimeoutError`` after
        ``timeout`` seconds (the job keeps running)."""
        self._start()
        async with asyncio.timeout(timeout):
            await self._done.wait()
        if self._failure is not None:
            raise self._failure
        assert self._result is not None
        return self._result.raise_for_status() if check else self._result

    async def status(self) -> ProgressEvent | Result:
        """Where the job is now, without waiting."""
        if self._result is not None:
            return self._result
        return await self.target.status(self.id)

    async def cancel(self) -> None:
        await self.target.cancel(self.id)


class Job:
    """`AsyncJob` for blocking code (the `Client`'s event loop runs in a thread)."""

    def __init__(self, job: AsyncJob, portal: BlockingPortal) -> None:
        self._job = job
        self._portal = portal
        self.id = job.id

    def __repr__(self) -> str:
        return f"<Job {self.id} on {self._job.target.kind}>"

    def progress(self) -> Iterator[ProgressEvent]:
        events = self._job.progress()

        async def step() -> Any:
            try:
                return await events.__anext__()
            except StopAsyncIteration:
                return _END

        while (item := self._portal.call(step)) is not _END:
            yield item

    def wait(self, timeout: float | None = None, *, check: bool = True) -> Result:
        return self._blocking(self._portal.call(lambda: self._job.wait(timeout, check=check)))

    def status(self) -> ProgressEvent | Result:
        state = self._portal.call(self._job.status)
        return self._blocking(state) if isinstance(state, Result) else state

    def _blocking(self, result: Result) -> Result:
        result._portal = self._portal
        return result

    def cancel(self) -> None:
        self._portal.call(self._job.cancel)
