"""Which team is asking: the dependencies that authenticate a team's API key and give the
route its connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.db import ConnectionLease
from service.teams.service import Caller, authenticate
from service.web import DbPool, shared

api_key_scheme = HTTPBearer(
    auto_error=False, scheme_name="TeamApiKey", description="A team API key: `Bearer qgw_...`"
)
Credentials = HTTPAuthorizationCredentials | None


@dataclass
class TeamRequest:
    """A team's request: its pooled connection and its caller (and for a submission, the
    lease of that connection, which it gives back while it waits)."""

    conn: asyncpg.Connection
    caller: Caller
    lease: ConnectionLease | None = None


async def team_request(
    request: Request, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> AsyncIterator[TeamRequest]:
    # One dependency (one pooled connection) per request: authentication and the route
    # share it, and FastAPI resolves one node instead of a chain on every hot request.
    async with shared(request).pool.acquire() as conn:
        caller = await authenticate(conn, token=credentials.credentials if credentials else None)
        yield TeamRequest(conn=conn, caller=caller)


TeamCtx = Annotated[TeamRequest, Depends(team_request)]


async def submission_request(
    request: Request, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> AsyncIterator[TeamRequest]:
    """team_request for submissions: the connection is leased, so that the submission can
    give it back while it waits on Redis or on its task."""
    lease = ConnectionLease(shared(request).pool)
    try:
        conn = await lease.get()
        caller = await authenticate(conn, token=credentials.credentials if credentials else None)
        yield TeamRequest(conn, caller, lease=lease)
    finally:
        await lease.release()


SubmissionCtx = Annotated[TeamRequest, Depends(submission_request)]


async def team_caller(
    pool: DbPool, credentials: Annotated[Credentials, Depends(api_key_scheme)]
) -> Caller:
    """The caller, with the connection given back at once: for routes that wait."""
    async with pool.acquire() as conn:
        return await authenticate(conn, token=credentials.credentials if credentials else None)


CurrentCaller = Annotated[Caller, Depends(team_caller)]
