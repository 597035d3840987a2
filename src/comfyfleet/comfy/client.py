"""An async client for one ComfyUI server.

One aiohttp session (keep-alive connections) and one websocket per client, shared by every
prompt it runs concurrently. Every failure surfaces as a `comfyfleet.errors` error:
unreachable → `ComfyUnavailable`, rejected prompt → `WorkflowValidationError`/`ComfyRejected`,
node failure → `NodeExecutionError`, interrupt → `JobInterrupted`, deadline → `JobTimeout`,
a prompt lost with its server → `ComfyConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from comfyfleet.comfy.events import EventStream, Found, Watch
from comfyfleet.comfy.http import ComfyHTTP, HTTPStatus, parse_json, queued_ids
from comfyfleet.comfy.messages import (
    Event,
    HistoryEntry,
    failure_from_event,
    node_errors,
    rejection,
)
from comfyfleet.comfy.progress import ProgressTracker
from comfyfleet.errors import (
    ComfyConnectionLost,
    ComfyError,
    ComfyFleetError,
    JobTimeout,
    WorkflowValidationError,
)
from comfyfleet.jobs import Progress

ProgressCallback = Callable[[Progress], Any]


class Client(ComfyHTTP):
    """``async with Client("http://127.0.0.1:8188") as comfy: ...``"""

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        reconnect_timeout: float = 30.0,
        history_timeout: float = 10.0,
        cancel_grace: float = 5.0,
        outputs_from_stream: bool = True,
        on_down: Callable[[str], None] | None = None,
        history_batch: int = 1,
    ) -> None:
        super().__init__(
            url, session=session, request_timeout=request_timeout, connect_timeout=connect_timeout
        )
        self.client_id = client_id or uuid.uuid4().hex
        self._reconnect_timeout = reconnect_timeout
        self._history_timeout = history_timeout
        self._cancel_grace = cancel_grace
        self._outputs_from_stream = outputs_from_stream
        self._events: EventStream | None = None
        self._classes: dict[str, dict[str, str]] = {}
        #: Called with a reason when ComfyUI is found gone (socket closed, connections refused).
        self.on_down = on_down
        # History entries to delete are sent in batches of this many (a long-running client
        # saves a request per job; ComfyUI keeps at most 10,000 entries anyway).
        self._history_batch = max(1, history_batch)
        self._unforgotten: list[str] = []

    async def __aenter__(self) -> Client:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._unforgotten:  # the last batch; briefly (ComfyUI may be gone)
            ids, self._unforgotten = self._unforgotten, []
            with contextlib.suppress(ComfyFleetError):
                await self._post("/history", json={"delete": ids}, timeout=2.0)
        if self._events is not None:
            await self._events.close()
            self._events = None
        await super().close()

    @property
    def events(self) -> EventStream:
        """The shared websocket stream (created on first use, connected by `connect`)."""
        if self._events is None:
            ws_url = "ws" + self.url[4:] if self.url.startswith("http") else self.url
            self._events = EventStream(
                self._ensure_session(),
                f"{ws_url}/ws?clientId={self.client_id}",
                self._reconcile,
                reconnect_timeout=self._reconnect_timeout,
                connect_timeout=self._connect_timeout,
                on_down=self._down,
            )
        return self._events

    async def delete_history(self, prompt_ids: Iterable[str]) -> None:
        """Delete history entries -- with ``history_batch`` > 1, once that many are due."""
        if self._history_batch == 1:
            return await super().delete_history(prompt_ids)
        self._unforgotten.extend(prompt_ids)
        if len(self._unforgotten) >= self._history_batch:
            due, self._unforgotten = self._unforgotten, []
            await super().delete_history(due)

    def _down(self, reason: str) -> None:
        if self.on_down is not None:
            self.on_down(reason)

    async def connect(self) -> None:
        """Open the websocket now (otherwise the first `submit` does)."""
        await self.events.connect()

    # --- submitting ---------------------------------------------------------------------

    async def submit(
        self,
        graph: dict[str, Any],
        prompt_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> str:
        """Queue ``graph`` under our own ``prompt_id`` and this client's ``client_id``.

        The prompt is watched on the shared websocket before it is posted, so no message is
        missed; collect it with `wait`. A prompt ComfyUI accepts only partly (some output
        branches invalid) is withdrawn and reported like a rejection.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        await self.events.connect()
        watch = self.events.watch(prompt_id)
        self._classes[prompt_id] = {
            str(k): str(v.get("class_type")) for k, v in graph.items() if isinstance(v, dict)
        }
        body: dict[str, Any] = {
            "prompt": graph,
            "client_id": self.client_id,
            "prompt_id": prompt_id,
        }
        if extra_data:
            body["extra_data"] = extra_data
        try:
            try:
                answer = await self._call("POST", "/prompt", json=body)
            except HTTPStatus as exc:
                parsed = parse_json(exc.body) if exc.body else None
                if exc.status == 400:
                    raise rejection(parsed, graph) from None
                raise ComfyError(f"POST /prompt answered HTTP {exc.status}") from None
            partial = node_errors((answer or {}).get("node_errors"))
            if partial:
                await self.cancel(prompt_id)
                raise WorkflowValidationError(partial)
        except asyncio.CancelledError:  # it may be queued already: do not leave it behind
            with contextlib.suppress(Exception):
                await asyncio.shield(self.cancel(prompt_id))
            self._forget(prompt_id)
            raise
        except BaseException:
            self._forget(prompt_id)
            raise
        await self.events.submitted(watch)
        return prompt_id

    # --- waiting --------------------------------------------------------------------------

    async def wait(
        self,
        prompt_id: str,
        deadline: float | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        job_id: str | None = None,
    ) -> HistoryEntry:
        """Wait until ``prompt_id`` is done and return its history entry.

        Done is ``executing {node: null}`` for our prompt (ComfyUI stores history before it).
        If the websocket stayed up the whole time, the entry is assembled from the prompt's
        own ``executed`` messages (what ComfyUI's frontend does; it saves the ``/history``
        round trip); after any gap, or with ``outputs_from_stream=False``, it is fetched from
        ``/history``, retrying briefly while ComfyUI still answers ``{}``. ``deadline`` is a
        `time.monotonic` instant: past it our prompt alone is withdrawn or interrupted and
        `JobTimeout` is raised. Cancelling the caller cancels the prompt the same way.
        """
        watch = self.events.get(prompt_id)
        tracker = ProgressTracker(job_id or prompt_id, prompt_id, self._classes.get(prompt_id, {}))
        try:
            async with asyncio.timeout_at(deadline) as limit:
                if watch is None:  # not submitted by this client: its messages go elsewhere
                    return await self._poll(prompt_id)
                return await self._follow(watch, tracker, on_progress)
        except TimeoutError:
            # Our deadline, even when the loop's timer fired a hair early (uvloop's timers
            # have millisecond resolution: time.monotonic() may still be short of it).
            if deadline is None or not limit.expired():
                raise
            await self.cancel(prompt_id)
            raise JobTimeout(
                f"prompt {prompt_id} ran past its deadline and was interrupted",
                prompt_id=prompt_id,
            ) from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.cancel(prompt_id))
            raise
        finally:
            self._forget(prompt_id)

    async def _follow(
        self, watch: Watch, tracker: ProgressTracker, on_progress: ProgressCallback | None
    ) -> HistoryEntry:
        watch.progress = on_progress is not None
        while True:
            item = await watch.next()
            if isinstance(item, ComfyFleetError):
                raise item
            if isinstance(item, HistoryEntry):  # finished during a websocket gap
                error = item.failure()
                if error is not None:
                    raise error
                return item
            if item.is_done:
                if watch.failure is not None:
                    error = failure_from_event(watch.failure.type, watch.failure.data)
                    if error is not None:
                        raise error
                if self._outputs_from_stream and not watch.broken:
                    return HistoryEntry(
                        watch.prompt_id, watch.outputs, status_str="success", completed=True
                    )
                return await self._history_after_done(watch.prompt_id)
            if on_progress is not None:
                report = tracker.update(item)
                if report is not None:
                    result = on_progress(report)
                    if inspect.isawaitable(result):
                        await result

    async def _poll(self, prompt_id: str) -> HistoryEntry:
        """Wait for a prompt of another client (e.g. ours before a restart) by polling."""
        delay = 0.05
        while True:
            state = (await self._reconcile([prompt_id]))[prompt_id]
            if isinstance(state, HistoryEntry):
                error = state.failure()
                if error is not None:
                    raise error
                return state
            if state is None:
                raise ComfyConnectionLost(
                    f"prompt {prompt_id} is in neither ComfyUI's queue nor its history",
                    prompt_id=prompt_id,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _history_after_done(self, prompt_id: str) -> HistoryEntry:
        end = time.monotonic() + self._history_timeout
        delay = 0.002
        while True:
            entry = await self.history(prompt_id)
            if entry is not None:
                error = entry.failure()
                if error is not None:
                    raise error
                return entry
            if time.monotonic() + delay > end:
                raise ComfyError(
                    f"prompt {prompt_id} finished but its history did not appear within "
                    f"{self._history_timeout:g}s",
                    prompt_id=prompt_id,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def cancel(self, prompt_id: str) -> None:
        """Stop our prompt only: drop it from the pending queue, interrupt it if it is running
        (a targeted interrupt is a no-op for any other prompt), then wait — bounded by
        ``cancel_grace`` — until ComfyUI is done with it, so cleanup does not race its writes."""
        with contextlib.suppress(ComfyFleetError):
            await self.delete_queued([prompt_id])
            await self.interrupt(prompt_id)
        watch = self._events.get(prompt_id) if self._events else None
        end = time.monotonic() + self._cancel_grace
        delay = 0.05
        while time.monotonic() < end:
            if watch is not None and await _finishes_within(watch, delay):
                return
            try:
                if prompt_id not in queued_ids(await self.queue()):
                    return
            except ComfyFleetError:
                return
            if watch is None:
                await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _reconcile(self, prompt_ids: list[str]) -> dict[str, Found]:
        """Queue first, then history: a prompt moves from the queue into history, so checking
        in this order cannot miss one that finishes between the two requests."""
        queued = queued_ids(await self.queue())
        found: dict[str, Found] = {}
        for prompt_id in prompt_ids:
            if prompt_id in queued:
                found[prompt_id] = "queued"
            else:
                found[prompt_id] = await self.history(prompt_id)
        return found

    def _forget(self, prompt_id: str) -> None:
        self._classes.pop(prompt_id, None)
        if self._events is not None:
            self._events.unwatch(prompt_id)


async def _finishes_within(watch: Watch, seconds: float) -> bool:
    """Drain ``watch`` until its terminal item (True) or until ``seconds`` pass (False)."""
    if watch.finished:
        return True
    try:
        async with asyncio.timeout(seconds):
            while True:
                item = await watch.next()
                if not isinstance(item, Event) or item.is_done:
                    return True
    except TimeoutError:
        return False
