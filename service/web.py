"""HTTP plumbing every domain's routes share: the process's settings, pool, Redis, clock and
egress policy, read from what the lifespan built (`app.state.resources`), a pooled
connection per request, the operator's tokens (admin API, /metrics), and routes that know
their caller before they read a body (GuardedRoute). Domains add dependencies for their
own parts the same way; teams/auth.py authenticates team keys."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, ClassVar, cast

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from service.config import Settings
from service.platform.bodies import BodyReader, read_body, refuse_json_bombs, replay
from service.platform.egress import DestinationPolicy
from service.platform.errors import Unauthorized


def shared(request: Request) -> Any:
    """What the lifespan built (service.tasks.resources.open_resources)."""
    return request.app.state.resources


# async: FastAPI runs plain-def dependencies in a thread pool, costly on hot paths.
async def get_settings(request: Request) -> Settings:
    settings: Settings = shared(request).settings
    return settings


async def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = shared(request).pool
    return pool


async def get_redis(request: Request) -> ArqRedis:
    redis: ArqRedis = shared(request).redis
    return redis


async def get_clock(request: Request) -> Callable[[], datetime]:
    """What "now" is for budget windows; tests move it to cross window boundaries."""
    clock: Callable[[], datetime] = shared(request).clock
    return clock


async def get_egress(request: Request) -> DestinationPolicy:
    policy: DestinationPolicy = shared(request).egress
    return policy


async def get_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with shared(request).pool.acquire() as conn:
        yield conn


AppSettings = Annotated[Settings, Depends(get_settings)]
DbPool = Annotated[asyncpg.Pool, Depends(get_pool)]
AppRedis = Annotated[ArqRedis, Depends(get_redis)]
Clock = Annotated[Callable[[], datetime], Depends(get_clock)]
Egress = Annotated[DestinationPolicy, Depends(get_egress)]
DbConn = Annotated[asyncpg.Connection, Depends(get_connection)]


admin_scheme = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="`Bearer <QGW_ADMIN_TOKEN>`"
)
metrics_scheme = HTTPBearer(
    auto_error=False, scheme_name="MetricsToken", description="`Bearer <QGW_METRICS_TOKEN>`"
)
Credentials = HTTPAuthorizationCredentials | None


def require_token(token: str | None) -> str:
    """The bearer token, or 401: the one check of every key and token the gateway reads."""
    if not token or not token.strip():
        raise Unauthorized("missing or malformed Authorization header (expected 'Bearer <key>')")
    return token.strip()


def bearer(credentials: Credentials) -> str:
    return require_token(credentials.credentials if credentials else None)


async def require_admin(
    settings: AppSettings, credentials: Annotated[Credentials, Depends(admin_scheme)]
) -> None:
    expected = settings.admin_token.get_secret_value()
    if not expected:
        raise Unauthorized("the admin API is disabled: QGW_ADMIN_TOKEN is not set")
    if not hmac.compare_digest(bearer(credentials).encode(), expected.encode()):
        raise Unauthorized("invalid admin token")


async def require_metrics_token(
    settings: AppSettings, credentials: Annotated[Credentials, Depends(metrics_scheme)]
) -> None:
    """/metrics names every team and its spend: with QGW_METRICS_TOKEN set, only a scraper
    holding it may read it."""
    expected = settings.metrics_token.get_secret_value()
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("/metrics requires the bearer token QGW_METRICS_TOKEN")


async def admin_caller(request: Request) -> None:
    """require_admin, for a GuardedRoute (before the body)."""
    await require_admin(shared(request).settings, await admin_scheme(request))


def body_reader(limit: Callable[[Settings], int]) -> BodyReader:
    """Read a body of at most `limit(settings)` bytes within QGW_BODY_READ_TIMEOUT_SECONDS."""

    async def read(request: Request) -> bytes:
        settings: Settings = shared(request).settings
        return await read_body(
            request, max_bytes=limit(settings), timeout=settings.body_read_timeout_seconds
        )

    return read


_read_large_body = body_reader(lambda settings: settings.max_request_bytes)


async def read_task_body(request: Request) -> bytes:
    """A task body (submit, sync, estimate): as large as Base64 images need, but never more
    JSON objects and arrays than a task has."""
    body = await _read_large_body(request)
    refuse_json_bombs(body)
    return body


read_admin_body = body_reader(lambda settings: settings.max_admin_body_bytes)
read_callback_body = body_reader(lambda settings: settings.max_callback_body_bytes)

Guard = Callable[[Request], Awaitable[object]]


class GuardedRoute(APIRoute):
    """A FastAPI route that authenticates its caller before it reads a byte of the body.

    FastAPI reads and parses a declared body before it solves the dependencies, the
    authentication among them, so a stranger's 20 MiB was read and parsed whole before the
    401. This route runs `guard` first (it raises Unauthorized), then `read_body` (bounded,
    with a deadline, and no connection taken yet), then FastAPI's own handler on the body so
    read: the declaration, OpenAPI, validation and errors are FastAPI's. Routes without a
    body are served as FastAPI serves them. Make one with `guarded_route`."""

    guard: ClassVar[Guard]
    read_body: ClassVar[BodyReader]

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        guard, read = type(self).guard, type(self).read_body

        async def app(request: Request) -> Response:
            await guard(request)
            body = await read(request)
            return await handler(Request(request.scope, replay(body, request.receive)))

        return app


def guarded_route(guard: Guard, read: BodyReader) -> type[GuardedRoute]:
    """A GuardedRoute class (for `APIRouter(route_class=...)`) with this guard and reader."""
    attributes = {"guard": staticmethod(guard), "read_body": staticmethod(read)}
    return cast(type[GuardedRoute], type("GuardedRoute", (GuardedRoute,), attributes))


# The admin API's routes: the admin token, then at most QGW_MAX_ADMIN_BODY_BYTES.
AdminRoute = guarded_route(admin_caller, read_admin_body)
