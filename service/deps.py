"""Request-scoped dependencies: the shared resources built by the lifespan, and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
import httpx
from arq.connections import ArqRedis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.catalog.models import PriceTable
from service.config import Settings
from service.tasks.queue import DispatchKicker
from service.teams.service import Caller, authenticate, authenticate_admin
from service.upstream.client import QingboClient


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    http: httpx.AsyncClient
    qingbo: QingboClient
    prices: PriceTable
    kicker: DispatchKicker


async def get_resources(request: Request) -> Resources:
    # async: FastAPI runs plain-def dependencies in a thread pool, costly on hot paths.
    resources: Resources = request.app.state.resources
    return resources


AppResources = Annotated[Resources, Depends(get_resources)]


async def _prices(resources: AppResources) -> PriceTable:
    return resources.prices


AppPrices = Annotated[PriceTable, Depends(_prices)]


api_key_scheme = HTTPBearer(
    auto_error=False, scheme_name="TeamApiKey", description="A team API key: `Bearer qgw_...`"
)
admin_scheme = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="`Bearer <QGW_ADMIN_TOKEN>`"
)
Credentials = HTTPAuthorizationCredentials | None


async def db_connection(resources: AppResources) -> AsyncIterator[asyncpg.Connection]:
    """One pooled connection per request, shared by authentication and the route."""
    async with resources.pool.acquire() as conn:
        yield conn


DbConn = Annotated[asyncpg.Connection, Depends(db_connection)]


async def current_key(
    conn: DbConn, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> Caller:
    return await authenticate(conn, token=credentials.credentials if credentials else None)


CurrentKey = Annotated[Caller, Depends(current_key)]


async def require_admin(
    resources: AppResources, credentials: Annotated[Credentials, Depends(admin_scheme)]
) -> None:
    authenticate_admin(
        token=credentials.credentials if credentials else None,
        admin_token=resources.settings.admin_token.get_secret_value(),
    )
