"""Reject oversized request bodies with 413 before anything parses them.

A declared ``Content-Length`` over the limit is answered at once, without reading a byte; a
chunked body is counted as it streams and cut off the moment it passes the limit. Either way
the answer is the API's one error shape and no route has run, so nothing was created.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyfleet.errors import PayloadTooLarge


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit. An HTTPException because FastAPI
    turns any other exception met while reading a body into a generic 400; the app's handler
    answers it as `PayloadTooLarge`."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(413)
        self.error = too_large(limit, declared)


def too_large(limit: int, declared: int | None = None) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is larger than the limit of {limit} bytes",
        limit=limit,
        content_length=declared,
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, declared)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:  # read outside the app's exception handlers
            if started:
                raise
            await self._reject(send, None)

    async def _reject(self, send: Send, declared: int | None) -> None:
        error = too_large(self.max_bytes, declared)
        body = json.dumps({"error": error.to_dict()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
