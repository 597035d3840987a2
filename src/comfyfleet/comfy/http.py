"""Plain HTTP calls to one ComfyUI: one aiohttp session (keep-alive connections) per client.

Transport failures become `ComfyUnavailable`; an unexpected status becomes `ComfyError`.
`comfyfleet.comfy.Client` adds the websocket, submitting and waiting on top.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO, Any

import aiohttp

from comfyfleet.comfy.messages import HistoryEntry
from comfyfleet.errors import ComfyError, ComfyFleetError, ComfyUnavailable


class ComfyHTTP:
    """The stateless part of the API (plus the object_info cache)."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._request_timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=connect_timeout
        )
        self._connect_timeout = connect_timeout
        self._object_info: dict[str, Any] | None = None
        self._object_info_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _call(
        self, method: str, path: str, *, timeout: float | None = None, **kw: Any
    ) -> Any:
        """One request; the JSON body (or ``None`` when empty). Maps transport failures."""
        session = self._ensure_session()
        to = self._request_timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.request(method, self.url + path, timeout=to, **kw) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise HTTPStatus(resp.status, body)
                return parse_json(body) if body else None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise ComfyUnavailable(
                f"ComfyUI at {self.url} is unavailable: {exc or type(exc).__name__}", path=path
            ) from exc
        except TimeoutError as exc:
            raise ComfyUnavailable(
                f"ComfyUI at {self.url} did not answer {method} {path} in time", path=path
            ) from exc

    async def _get(self, path: str, **kw: Any) -> Any:
        try:
            return await self._call("GET", path, **kw)
        except HTTPStatus as exc:
            raise ComfyError(f"GET {path} answered HTTP {exc.status}", status=exc.status) from None

    async def _post(self, path: str, **kw: Any) -> Any:
        try:
            return await self._call("POST", path, **kw)
        except HTTPStatus as exc:
            raise ComfyError(f"POST {path} answered HTTP {exc.status}", status=exc.status) from None

    async def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/system_stats`` with backoff until ComfyUI answers; `ComfyUnavailable` after
        ``timeout`` seconds (a refused connection is retried: ComfyUI may still be starting)."""
        end = time.monotonic() + timeout
        delay, last = 0.05, "no answer"
        while True:
            left = end - time.monotonic()
            try:
                return await self._get("/system_stats", timeout=max(min(left, 5.0), 2.0))
            except ComfyFleetError as exc:
                last = str(exc.__cause__ or "") or exc.message
            if time.monotonic() + delay > end:
                waited = f" (waited {timeout:g}s)" if timeout > 0 else ""
                raise ComfyUnavailable(f"ComfyUI at {self.url} is unavailable{waited}: {last}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def system_stats(self) -> dict[str, Any]:
        return await self._get("/system_stats")

    @property
    def cached_object_info(self) -> dict[str, Any] | None:
        """The node catalogue if it was already fetched (never a request)."""
        return self._object_info

    async def object_info(self, *, refresh: bool = False) -> dict[str, Any]:
        """Every node class's definition; fetched once per client (it is ~600 KB)."""
        if self._object_info is None or refresh:
            async with self._object_info_lock:
                if self._object_info is None or refresh:
                    self._object_info = await self._get("/object_info")
        return self._object_info

    async def folder_paths(self) -> dict[str, list[str]] | None:
        """``GET /internal/folder_paths`` (the frontend's route, not under ``/api``): every
        model folder name with its paths; None where it is not served (404: an older
        ComfyUI, a proxy). See `comfyfleet.comfy.folders` for what it tells."""
        try:
            answer = await self._call("GET", "/internal/folder_paths")
        except HTTPStatus as exc:
            if exc.status == 404:
                return None
            raise ComfyError(
                f"GET /internal/folder_paths answered HTTP {exc.status}", status=exc.status
            ) from None
        return answer if isinstance(answer, dict) else None

    async def upload(
        self,
        name: str,
        data: bytes | IO[bytes] | Path,
        *,
        subfolder: str = "",
        overwrite: bool = True,
        type: str = "input",
    ) -> dict[str, Any]:
        """``POST /upload/image``; returns ``{name, subfolder, type}`` as ComfyUI stored it
        (without ``overwrite`` ComfyUI renames a clashing file to ``name (1).png``)."""
        form = aiohttp.FormData()
        if isinstance(data, Path):
            data = data.read_bytes()
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true" if overwrite else "false")
        if type != "input":
            form.add_field("type", type)
        if subfolder:
            form.add_field("subfolder", subfolder)
        return await self._post("/upload/image", data=form)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt's entry, or ``None`` (ComfyUI answers ``{}`` until written)."""
        return HistoryEntry.from_response(prompt_id, await self._get(f"/history/{prompt_id}"))

    async def queue(self) -> dict[str, Any]:
        return await self._get("/queue")

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt ``prompt_id`` if it is the running prompt (no-op otherwise); without an
        id, whatever runs — which may be another client's prompt."""
        await self._post("/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    async def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts from the queue (never affects the running one)."""
        await self._post("/queue", json={"delete": list(prompt_ids)})

    async def delete_history(self, prompt_ids: Iterable[str]) -> None:
        await self._post("/history", json={"delete": list(prompt_ids)})

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        await self._post("/free", json={"unload_models": unload_models, "free_memory": free_memory})

    async def view(
        self, filename: str, subfolder: str = "", type: str = "output", chunk_size: int = 2**18
    ) -> AsyncIterator[bytes]:
        """Stream a saved file from ``/view`` in chunks (never the whole file in memory)."""
        session = self._ensure_session()
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=self._request_timeout.total
        )
        try:
            async with session.get(self.url + "/view", params=params, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ComfyError(
                        f"ComfyUI has no {type} file {_join(subfolder, filename)} "
                        f"(HTTP {resp.status})",
                        filename=filename,
                        subfolder=subfolder,
                    )
                async for chunk in resp.content.iter_chunked(chunk_size):
                    yield chunk
        except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
            raise ComfyUnavailable(f"downloading {filename} from ComfyUI failed: {exc}") from exc


class HTTPStatus(Exception):
    """A non-2xx answer (kept internal: callers map it to the right error)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def queued_ids(queue: Any) -> set[str]:
    ids: set[str] = set()
    for key in ("queue_running", "queue_pending"):
        for item in (queue or {}).get(key) or []:
            if isinstance(item, list) and len(item) > 1:
                ids.add(str(item[1]))
    return ids


def _join(subfolder: str, filename: str) -> str:
    return f"{subfolder}/{filename}" if subfolder else filename
