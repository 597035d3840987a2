"""``create_app(settings)``: the gateway's FastAPI application.

Every error leaves as ``{"error": {"code", "message", "details"}}`` with the status its
`ComfyFleetError` class names; framework errors (validation, unknown route) are mapped into the
same shape. The lifespan opens the queue, the fleet and the webhook deliverer (`state`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from comfyfleet import __version__
from comfyfleet.config import Settings, get_settings
from comfyfleet.errors import AuthError, ComfyFleetError, InvalidRequest, NotFound
from comfyfleet.gateway.auth import KeyRing, check_exposure
from comfyfleet.gateway.intake import describe
from comfyfleet.gateway.limits import BodyLimitMiddleware, BodyTooLarge
from comfyfleet.gateway.routes import (
    artifacts,
    backends,
    comfy_compat,
    dashboard,
    health,
    live,
    metrics,
    models,
    task_actions,
    tasks,
    templates,
)
from comfyfleet.gateway.schemas import body_schemas, fit_openapi
from comfyfleet.gateway.state import DEMO_LABEL, Gateway, running_gateway

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")


def create_app(
    settings: Settings | None = None,
    *,
    demo: bool = False,
    announce: Callable[[Gateway], None] | None = None,
) -> FastAPI:
    """The app for ``settings``; raises InsecureBinding for an open gateway off loopback.
    ``demo`` adds the ComfyUI test server as a backend; ``announce`` is called once started."""
    settings = settings or get_settings()
    keys = KeyRing.parse(settings.api_keys)
    check_exposure(settings.host, keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_gateway(settings, keys, demo=demo) as gateway:
            app.state.gateway = gateway
            if demo:
                log.warning("demo mode: backend %r is the built-in test server", DEMO_LABEL)
            if announce is not None:
                announce(gateway)
            yield

    app = FastAPI(
        title="comfyfleet gateway",
        version=__version__,
        description="A durable priority queue in front of many ComfyUI backends.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    for module in (
        tasks,
        task_actions,
        templates,
        models,
        artifacts,
        backends,
        health,
        metrics,
        dashboard,
        live,
        comfy_compat,
    ):
        app.include_router(module.router)
    if importlib.util.find_spec("comfyfleet.gateway.routes.agents") is not None:
        from comfyfleet.gateway.routes import agents

        app.include_router(agents.router)
    from comfyfleet.gateway.routes import workers

    app.include_router(workers.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _document(app, keys)
    return app


def _document(app: FastAPI, keys: KeyRing) -> None:
    """Add the task bodies (read raw by the route) to the OpenAPI components, and make the
    schema describe this gateway's mode (with or without API keys) and real statuses."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body_schemas())
            fit_openapi(schema, open_gateway=keys.open)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def error_response(error: ComfyFleetError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if type(error) is AuthError else None
    return JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ComfyFleetError)
    async def _ours(request: Request, exc: ComfyFleetError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return error_response(InvalidRequest(describe(errors), errors=errors))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return error_response(exc.error)
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.url.path}"))
        error = ComfyFleetError(str(exc.detail))
        body = {"error": {"code": _http_code(exc.status_code), "message": error.message}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _http_code(status: int) -> str:
    return {405: "method_not_allowed", 406: "not_acceptable", 415: "unsupported_media_type"}.get(
        status, "http_error"
    )
