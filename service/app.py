"""The FastAPI application: one lifespan for the shared resources, routers, middleware."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig
from prometheus_client import multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.archive import routes as archive_routes
from service.audit import routes as audit_routes
from service.budgets import routes as budget_routes
from service.catalog import routes as catalog_routes
from service.catalog_admin import routes as catalog_admin_routes
from service.config import Settings, get_settings
from service.console.mount import mount_console
from service.ops import health
from service.platform.errors import PayloadTooLarge, error_response, install_error_handlers
from service.platform.heap import freeze_startup_heap
from service.platform.logs import accept_request_id, request_id_var
from service.platform.metrics import HTTP_LATENCY, HTTP_REQUESTS, child
from service.spend import routes as spend_routes
from service.tasks import callback_routes
from service.tasks import routes as task_routes
from service.tasks.resources import open_resources
from service.teams import routes as team_routes
from service.teams.auth import team_caller
from service.webhooks import routes as webhook_routes

logger = logging.getLogger(__name__)

NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class _BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    """Everything every request passes through, in one layer (each layer costs a hop):

    the request id (accepted or made, echoed, in every log line), the body limit (413 in
    Qingbo's envelope, declared or streamed), and metrics by route template (never the
    raw path: ids stay out of labels).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: bool = True) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = accept_request_id(scope["headers"])
        token = request_id_var.set(request_id)
        status = 500
        response_started = False
        seen = 0
        overflowed = False

        async def limited_receive() -> Message:
            nonlocal seen, overflowed
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                overflowed = True  # FastAPI catches what body reading raises: remember it
                raise _BodyTooLarge
            return message

        async def edge_send(message: Message) -> None:
            nonlocal status, response_started
            if overflowed:
                return  # the app's answer to a body it could not read whole; 413 follows
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            if declared_length(scope["headers"]) > self.max_bytes:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, edge_send)
            if overflowed:  # a chunked body over the limit, caught as a parse error inside
                raise _BodyTooLarge
        except _BodyTooLarge:
            overflowed = False  # let the 413 itself through edge_send
            if not response_started:
                too_large = PayloadTooLarge(f"request body over {self.max_bytes} bytes")
                await error_response(too_large)(scope, receive, edge_send)
        finally:
            request_id_var.reset(token)
            if self.metrics:
                template = getattr(scope.get("route"), "path", None) or "unmatched"
                method = scope["method"]
                child(HTTP_REQUESTS, template, method, str(status)).inc()
                child(HTTP_LATENCY, template, method).observe(time.perf_counter() - started_at)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, listen_for_notifications=True) as resources:
            app.state.resources = resources
            freeze_startup_heap()
            yield
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # drop this process's live gauges
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    app = FastAPI(
        title="Qingbo Gateway",
        version="0.1.0",
        description=(
            "Qingbo-compatible video-generation API with team keys, budgets, quotas, fair "
            "dispatch, webhooks and metrics. Errors use Qingbo's envelope "
            '`{"error": {"message", "code"}}`.'
        ),
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry asks the global tracer, meter and logger providers
        # (and the environment behind them) on every request whether any is set, a visible
        # share of the API's CPU per submission (bench/cpu.py --py-spy). The gateway exports
        # Prometheus metrics and JSON logs; it sets no OpenTelemetry provider.
        telemetry=NO_OPENTELEMETRY,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(task_routes.router)
    app.include_router(archive_routes.router)
    # The catalog knows no teams: the team key it requires is checked here.
    app.include_router(catalog_routes.router, dependencies=[Depends(team_caller)])
    for module in (team_routes, callback_routes, health):
        app.include_router(module.router)
    for module in (budget_routes, spend_routes, webhook_routes):
        app.include_router(module.router)
        app.include_router(module.admin)
    app.include_router(audit_routes.admin)
    app.include_router(catalog_admin_routes.router)
    # Last, so the API's routes match first; it adds routes only, no middleware.
    mount_console(app, settings)
    app.add_middleware(
        EdgeMiddleware, max_bytes=settings.max_request_bytes, metrics=settings.http_metrics
    )
    return app


def app_factory() -> Any:
    """For `uvicorn --factory service.app:app_factory`."""
    return create_app()
