"""One persistent websocket per client, shared by every prompt that client runs.

ComfyUI sends a prompt's messages only to the websocket whose id was the prompt's ``client_id``,
and sends nothing again for what happened while that socket was down. So the stream
reconnects after a drop (tenacity backoff) and, after every reconnect — and between attempts,
which makes it an HTTP polling fallback while the socket is refused — reconciles each watched
prompt with ``/queue`` and ``/history``: a prompt that finished in the gap is completed from its
history entry, one still queued keeps waiting, and one in neither is reported lost. The stream
gives up when neither the socket nor HTTP has worked for ``reconnect_timeout`` seconds -- or at
once when both are *refused*: nothing listens on ComfyUI's port, so its process is gone and so is
every prompt in its (in-memory) queue. Then every watch hears `ComfyConnectionLost` and
``on_down`` is called, within milliseconds of a ``kill -9`` instead of after the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from comfyfleet.comfy.messages import Event, HistoryEntry, parse_text
from comfyfleet.errors import ComfyConnectionLost, ComfyFleetError, ComfyUnavailable

log = logging.getLogger(__name__)

#: What a reconcile finds per prompt id: its history entry, ``"queued"``, or ``None`` (lost).
Found = HistoryEntry | str | None
Reconciler = Callable[[list[str]], Awaitable[dict[str, Found]]]
Item = Event | HistoryEntry | ComfyFleetError
OnDown = Callable[[str], None]


def connection_refused(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a refused TCP connection: nothing listens."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, ConnectionRefusedError):
            return True
        if isinstance(error, aiohttp.ClientConnectorError) and isinstance(
            error.os_error, ConnectionRefusedError
        ):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class _Gone(Exception):
    """The socket and HTTP are both refused: ComfyUI's process is not there."""


class Watch:
    """One prompt's share of the stream.

    Keeps what a caller needs even if it never looks at single events: the UI outputs of its
    ``executed`` messages, its ``execution_error``/``execution_interrupted`` event, whether
    the socket stayed up since the prompt was posted (``broken`` after any reconnect; then
    only ``/history`` is trustworthy), and whether ComfyUI began executing it (``started``:
    its ``execution_start`` was seen; until then it waits in ComfyUI's queue). Events are
    queued for a progress consumer while ``progress`` is set; the queue always ends with one
    terminal item (``executing {node: null}``, a history entry found by reconciliation, or an
    error).
    """

    __slots__ = (
        "broken",
        "failure",
        "finished",
        "generation",
        "items",
        "outputs",
        "progress",
        "prompt_id",
        "started",
        "submitted",
    )

    def __init__(self, prompt_id: str, generation: int) -> None:
        self.prompt_id = prompt_id
        self.generation = generation
        self.submitted = False
        self.started = False
        self.finished = False
        self.broken = False
        self.progress = True
        self.failure: Event | None = None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.items: asyncio.Queue[Item] = asyncio.Queue()

    def push(self, item: Item) -> None:
        if self.finished:
            return
        if isinstance(item, Event):
            kind = item.type
            if kind == "executed":
                node, output = item.data.get("node"), item.data.get("output")
                if node is not None and isinstance(output, dict):
                    self.outputs[str(node)] = output
            elif kind == "execution_start":
                self.started = True
            elif kind in ("execution_error", "execution_interrupted"):
                self.failure = item
                return
            if not item.is_done:
                if self.progress:
                    self.items.put_nowait(item)
                return
        self.finished = True
        self.items.put_nowait(item)

    async def next(self) -> Item:
        return await self.items.get()


class EventStream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws_url: str,
        reconcile: Reconciler,
        *,
        reconnect_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        heartbeat: float = 20.0,
        on_down: OnDown | None = None,
    ) -> None:
        self._session = session
        self.on_down = on_down
        self._ws_url = ws_url
        self._reconcile = reconcile
        self._reconnect_timeout = reconnect_timeout
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._watches: dict[str, Watch] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._connected = False
        self._closing = False
        self._last_alive = 0.0
        #: Bumped on every (re)connect, so a prompt submitted across a reconnect is reconciled.
        self.generation = 0
        #: Number of reconnects so far (for tests and metrics).
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        """Open the socket unless the stream is already running; `ComfyUnavailable` if not."""
        if self._reader is not None and not self._reader.done():
            return
        async with self._lock:
            if self._reader is not None and not self._reader.done():
                return
            self._ws = await self._open()
            self._connected = True
            self.generation += 1
            self._reader = asyncio.create_task(self._run(), name="comfy-events")

    def watch(self, prompt_id: str) -> Watch:
        """Start collecting events for ``prompt_id``; call before submitting it."""
        watch = self._watches[prompt_id] = Watch(prompt_id, self.generation)
        return watch

    def get(self, prompt_id: str) -> Watch | None:
        return self._watches.get(prompt_id)

    def unwatch(self, prompt_id: str) -> None:
        self._watches.pop(prompt_id, None)

    async def submitted(self, watch: Watch) -> None:
        """Mark ``watch`` as queued; if a reconnect happened meanwhile, reconcile it now."""
        watch.submitted = True
        if watch.generation != self.generation:
            watch.broken = True
            if self._connected:
                await self._reconcile_watches([watch])

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        self._connected = False

    async def drop(self) -> None:
        """Close the current socket as if the network had dropped it (tests, diagnostics)."""
        if self._ws is not None:
            await self._ws.close()

    # --- internals ------------------------------------------------------------------------

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    self._ws_url,
                    heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    max_msg_size=64 * 2**20,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ComfyUnavailable(
                f"ComfyUI websocket at {self._ws_url} is unavailable: {exc or type(exc).__name__}"
            ) from exc
        self._last_alive = time.monotonic()
        return ws

    async def _run(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        self._dispatch(parse_text(msg.data))
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        break
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("ComfyUI websocket failed: %s", exc)
            self._connected = False
            for watch in self._watches.values():
                watch.broken = True
            if self._closing:
                return
            log.warning("ComfyUI websocket dropped; reconnecting")
            try:
                await self._reconnect()
            except _Gone as exc:
                self._lost(f"ComfyUI at {self._ws_url} is gone: {exc}")
                return
            except Exception as exc:  # every waiter must hear about it, whatever it was
                reason = exc.message if isinstance(exc, ComfyFleetError) else repr(exc)
                self._lost(
                    f"lost ComfyUI at {self._ws_url} and could not reconnect within "
                    f"{self._reconnect_timeout:g}s: {reason}"
                )
                return

    def _lost(self, reason: str) -> None:
        """Every watched prompt is lost with its server; say so to the watches and owner."""
        log.warning("%s", reason)
        for watch in list(self._watches.values()):
            details = {"prompt_id": watch.prompt_id, "started": watch.started}
            watch.push(ComfyConnectionLost(reason, **details))
        if self.on_down is not None:
            try:
                self.on_down(reason)
            except Exception:
                log.exception("on_down callback failed")

    def _dispatch(self, event: Event | None) -> None:
        if event is not None and event.prompt_id is not None:
            watch = self._watches.get(event.prompt_id)
            if watch is not None:
                watch.push(event)

    async def _reconnect(self) -> None:
        self._last_alive = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ComfyUnavailable),
            wait=wait_exponential(multiplier=0.02, max=1.0),
            stop=lambda _state: time.monotonic() - self._last_alive > self._reconnect_timeout,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    ws = await self._open()
                except ComfyUnavailable as exc:
                    # Socket refused: poll over HTTP meanwhile, so completions are not delayed
                    # by the outage and a live HTTP API keeps the stream from giving up.
                    http_error = await self._poll_quietly(probe=True)
                    if connection_refused(exc) and connection_refused(http_error):
                        raise _Gone("the websocket closed and connections are refused") from exc
                    raise
        self._ws = ws
        self._connected = True
        self.generation += 1
        self.reconnects += 1
        for watch in self._watches.values():
            watch.broken = True
        await self._poll_quietly()

    async def _poll_quietly(self, *, probe: bool = False) -> ComfyFleetError | None:
        """Reconcile the watches over HTTP; the error if HTTP failed. ``probe``: ask ComfyUI
        (``/queue``) even when no prompt is watched, to learn whether HTTP answers at all."""
        try:
            await self._reconcile_watches(self._watches.values(), probe=probe)
        except ComfyFleetError as exc:
            log.info("reconciling with ComfyUI failed: %s", exc.message)
            return exc
        return None

    async def _reconcile_watches(self, watches: Iterable[Watch], *, probe: bool = False) -> None:
        pending = [w for w in watches if w.submitted and not w.finished]
        if not pending and not probe:
            self._last_alive = time.monotonic()
            return
        found = await self._reconcile([w.prompt_id for w in pending])
        self._last_alive = time.monotonic()
        for watch in pending:
            state = found.get(watch.prompt_id)
            if isinstance(state, HistoryEntry):
                watch.push(state)
            elif state is None:
                watch.push(
                    ComfyConnectionLost(
                        f"prompt {watch.prompt_id} is in neither ComfyUI's queue nor its history "
                        "(was ComfyUI restarted?)",
                        prompt_id=watch.prompt_id,
                    )
                )
