"""Request-scoped dependencies: the shared resources built by the lifespan, and the caller."""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.archive.copier import Archiver
from service.audit.service import AuditContext
from service.catalog.models import PriceTable
from service.config import Settings
from service.db import ConnectionLease
from service.errors import Unauthorized
from service.logs import request_id_var
from service.quotas.limiter import RateLimiter
from service.tasks.events import TaskEvents
from service.tasks.queue import DispatchKicker
from service.teams.service import Caller, authenticate, authenticate_admin
from service.upstream.client import QingboClient
from service.webhooks.delivery import WebhookSender


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    qingbo: QingboClient
    prices: PriceTable
    kicker: DispatchKicker
    limiter: RateLimiter
    webhooks: WebhookSender
    events: TaskEvents | None = None  # API processes only
    archive: Archiver | None = None  # with QGW_ARCHIVE_URL
    # What "now" is for budget windows; tests move it to cross window boundaries.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


async def get_resources(request: Request) -> Resources:
    # async: FastAPI runs plain-def dependencies in a thread pool, costly on hot paths.
    resources: Resources = request.app.state.resources
    return resources


AppResources = Annotated[Resources, Depends(get_resources)]


api_key_scheme = HTTPBearer(
    auto_error=False, scheme_name="TeamApiKey", description="A team API key: `Bearer qgw_...`"
)
admin_scheme = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="`Bearer <QGW_ADMIN_TOKEN>`"
)
Credentials = HTTPAuthorizationCredentials | None


@dataclass
class TeamRequest:
    """What a team's request works with: the shared resources, its connection, its caller
    (and for a submission, the lease of its connection, which it gives back while it
    waits)."""

    res: Resources
    conn: asyncpg.Connection
    caller: Caller
    lease: ConnectionLease | None = None


async def team_request(
    request: Request, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> AsyncIterator[TeamRequest]:
    # One dependency (one pooled connection) per request: authentication and the route
    # share it, and FastAPI resolves one node instead of a chain on every hot request.
    res: Resources = request.app.state.resources
    async with res.pool.acquire() as conn:
        caller = await authenticate(conn, token=credentials.credentials if credentials else None)
        yield TeamRequest(res=res, conn=conn, caller=caller)


TeamCtx = Annotated[TeamRequest, Depends(team_request)]


async def submission_request(
    request: Request, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> AsyncIterator[TeamRequest]:
    """team_request for submissions: the connection is leased, so that the submission can
    give it back while it waits on Redis or on its task."""
    res: Resources = request.app.state.resources
    lease = ConnectionLease(res.pool)
    try:
        conn = await lease.get()
        caller = await authenticate(conn, token=credentials.credentials if credentials else None)
        yield TeamRequest(res, conn, caller, lease=lease)
    finally:
        await lease.release()


SubmissionCtx = Annotated[TeamRequest, Depends(submission_request)]


async def team_caller(
    resources: AppResources, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> Caller:
    """The caller, with the connection given back at once: for routes that wait."""
    async with resources.pool.acquire() as conn:
        return await authenticate(conn, token=credentials.credentials if credentials else None)


CurrentCaller = Annotated[Caller, Depends(team_caller)]


_ACTOR = re.compile(r"^[\w .@:/+-]{1,100}$")


@dataclass
class AdminRequest:
    """An admin change's resources, its connection, and who is asking (for the audit)."""

    res: Resources
    conn: asyncpg.Connection
    audit: AuditContext


async def admin_request(
    request: Request,
    x_actor: Annotated[
        str | None,
        Header(
            alias="X-Actor",
            description="Who is making the change, for the audit trail (default: admin)",
        ),
    ] = None,
) -> AsyncIterator[AdminRequest]:
    res: Resources = request.app.state.resources
    actor = x_actor.strip() if x_actor and _ACTOR.match(x_actor.strip()) else "admin"
    audit = AuditContext(
        actor=actor,
        source=request.client.host if request.client else None,
        request_id=request_id_var.get(),
    )
    async with res.pool.acquire() as conn:
        yield AdminRequest(res=res, conn=conn, audit=audit)


AdminCtx = Annotated[AdminRequest, Depends(admin_request)]


metrics_scheme = HTTPBearer(
    auto_error=False, scheme_name="MetricsToken", description="`Bearer <QGW_METRICS_TOKEN>`"
)


async def require_metrics_token(
    resources: AppResources, credentials: Annotated[Credentials, Depends(metrics_scheme)]
) -> None:
    """/metrics names every team and its spend: with QGW_METRICS_TOKEN set, only a scraper
    holding it may read it."""
    expected = resources.settings.metrics_token.get_secret_value()
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("/metrics requires the bearer token QGW_METRICS_TOKEN")


async def require_admin(
    resources: AppResources, credentials: Annotated[Credentials, Depends(admin_scheme)]
) -> None:
    authenticate_admin(
        token=credentials.credentials if credentials else None,
        admin_token=resources.settings.admin_token.get_secret_value(),
    )
