"""HTTP for the SDK: one ``httpx.AsyncClient`` per target, retries with backoff only where a
repeat cannot do a job twice, and every error answer turned into our error class with the
server's message (node id, input name) intact.

``safe`` calls (reads, downloads, a submit carrying an idempotency key) are retried on
connection errors, 429 and 502/503/504; other calls only when the connection was refused (the
request never left).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from comfyfleet.errors import AuthError, ComfyFleetError, ServiceUnavailable

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class _Retryable(Exception):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response


class Transport:
    """Requests to one service (``base_url``); ``headers`` go only to that service."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        attempts: int = 5,
        backoff: float = 0.2,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = headers or {}
        self.attempts = attempts
        self.backoff = backoff
        self.http = http or httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        self._owns = http is None

    def _wait(self) -> Any:
        return wait_exponential(multiplier=self.backoff, max=5.0) + wait_random(0, self.backoff)

    async def aclose(self) -> None:
        if self._owns:
            await self.http.aclose()

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    def _mine(self, url: str) -> bool:
        return httpx.URL(url).netloc == httpx.URL(self.base_url).netloc

    async def request(
        self, method: str, path: str, *, safe: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """The answer (any status); `ServiceUnavailable` when the service cannot be reached."""
        url = self.url(path)
        headers = {**(self.headers if self._mine(url) else {}), **kwargs.pop("headers", {})}

        def retry(exc: BaseException) -> bool:
            if isinstance(exc, _Retryable):
                return safe
            return isinstance(exc, httpx.ConnectError) or (
                safe and isinstance(exc, httpx.TransportError)
            )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retry),
                stop=stop_after_attempt(self.attempts),
                wait=self._wait(),
                reraise=True,
            ):
                with attempt:
                    response = await self.http.request(method, url, headers=headers, **kwargs)
                    if response.status_code in RETRY_STATUSES and safe:
                        raise _Retryable(response)
                    return response
        except _Retryable as exc:
            return exc.response
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"{method} {url} failed: {type(exc).__name__}: {exc}", url=url
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a 2xx; our error for anything else."""
        response = await self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError:
            raise ServiceUnavailable(
                f"{method} {response.request.url} answered {response.status_code} with a body "
                f"that is not JSON: {response.text[:200]!r}"
            ) from None

    async def download(self, url: str, path: Path) -> None:
        """Stream ``url`` into ``path`` (our credentials only to our own service)."""
        headers = self.headers if self._mine(url) else {}
        tmp = path.with_name(path.name + ".part")
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, httpx.TransportError)),
            stop=stop_after_attempt(self.attempts),
            wait=self._wait(),
            reraise=True,
        ):
            with attempt:
                async with self.http.stream("GET", url, headers=headers) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    with tmp.open("wb") as out:
                        async for chunk in response.aiter_bytes(2**20):
                            out.write(chunk)
        tmp.replace(path)


def error_from_response(response: httpx.Response) -> ComfyFleetError:
    """Our error for an HTTP error answer: the gateway's ``{"error": {code, message,
    details}}`` keeps its class and details; anything else keeps the status and the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    where = f"{response.request.method} {response.request.url}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return rebuild(error.get("code"), str(error.get("message")), error.get("details") or {})
    if response.status_code in (401, 403):
        return AuthError(
            f"{where} answered {response.status_code}: check the API key", url=str(response.url)
        )
    text = json.dumps(body) if body is not None else response.text
    cls = ServiceUnavailable if response.status_code >= 500 else ComfyFleetError
    return cls(f"{where} answered HTTP {response.status_code}: {text[:500]}")


def rebuild(code: str | None, message: str, details: dict[str, Any]) -> ComfyFleetError:
    """The error class named by ``code`` (as every face reports it), with its details."""
    from comfyfleet.fleet.runpod import rebuild_error

    return rebuild_error(code, message, dict(details))
