"""HTTP plumbing every domain's routes share: the process's settings, pool, Redis, clock and
egress policy, read from what the lifespan built (`app.state.resources`), a pooled
connection per request, and the operator's tokens (admin API, /metrics). Domains add
dependencies for their own parts the same way; teams/auth.py authenticates team keys."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.egress import DestinationPolicy
from service.errors import Unauthorized


def shared(request: Request) -> Any:
    """What the lifespan built (service.resources.open_resources)."""
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
