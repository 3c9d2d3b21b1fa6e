"""Which team is asking: the dependencies that authenticate a team's API key and give the
route its connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.teams.service import Caller, authenticate
from service.web import shared

api_key_scheme = HTTPBearer(
    auto_error=False, scheme_name="TeamApiKey", description="A team API key: `Bearer qgw_...`"
)
Credentials = HTTPAuthorizationCredentials | None


@dataclass
class TeamRequest:
    """A team's request: its pooled connection and its caller."""

    conn: asyncpg.Connection
    caller: Caller


async def team_caller(
    request: Request, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> Caller:
    """The caller, from the process's key cache when it knows the key (no connection is
    taken), else from the database: for submissions, which take a connection only to
    admit, and for routes that wait."""
    resources = shared(request)
    token = credentials.credentials if credentials else None
    return await authenticate(resources.pool, token=token, keys=resources.keys)


CurrentCaller = Annotated[Caller, Depends(team_caller)]


async def team_key_checked(request: Request) -> None:
    """team_caller, for a GuardedRoute (service/web.py): a body is read only from a known
    key (the route's own dependency checks it again, from the key cache when it can)."""
    await team_caller(request, await api_key_scheme(request))


async def team_request(
    request: Request, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> AsyncIterator[TeamRequest]:
    # One dependency rather than a chain on team_caller: FastAPI resolves one node.
    caller = await team_caller(request, credentials)
    async with shared(request).pool.acquire() as conn:
        yield TeamRequest(conn=conn, caller=caller)


TeamCtx = Annotated[TeamRequest, Depends(team_request)]
