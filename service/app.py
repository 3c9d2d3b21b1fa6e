"""The FastAPI application: one lifespan for the shared resources, routers, middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import health
from service.catalog import routes as catalog_routes
from service.config import Settings, get_settings
from service.errors import PayloadTooLarge, error_response, install_error_handlers
from service.logs import RequestIdMiddleware
from service.metrics import HTTP_LATENCY, HTTP_REQUESTS
from service.resources import open_resources
from service.tasks import routes as task_routes
from service.teams import routes as team_routes
from service.upstream import routes as upstream_routes

logger = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 in Qingbo's envelope for bodies over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body over {self.max_bytes} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await error_response(too_large)(scope, receive, send)


class MetricsMiddleware:
    """Requests and latency by route template (never the raw path: ids stay out of labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(template, method, str(status)).inc()
            HTTP_LATENCY.labels(template, method).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, listen_for_task_events=True) as resources:
            app.state.resources = resources
            yield

    app = FastAPI(
        title="Qingbo Gateway",
        version="0.1.0",
        description=(
            "Qingbo-compatible video-generation API with team keys, budgets, quotas, fair "
            "dispatch, webhooks and metrics. Errors use Qingbo's envelope "
            '`{"error": {"message", "code"}}`.'
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for module in (task_routes, catalog_routes, team_routes, upstream_routes, health):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def app_factory() -> Any:
    """For `uvicorn --factory service.app:app_factory`."""
    return create_app()
