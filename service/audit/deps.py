"""The dependency of admin changes: their connection, and who is asking (for the audit)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from service.audit.service import AuditContext
from service.platform.logs import request_id_var
from service.web import shared

_ACTOR = re.compile(r"^[\w .@:/+-]{1,100}$")


@dataclass
class AdminRequest:
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
    actor = x_actor.strip() if x_actor and _ACTOR.match(x_actor.strip()) else "admin"
    audit = AuditContext(
        actor=actor,
        source=request.client.host if request.client else None,
        request_id=request_id_var.get(),
    )
    async with shared(request).pool.acquire() as conn:
        yield AdminRequest(conn=conn, audit=audit)


AdminCtx = Annotated[AdminRequest, Depends(admin_request)]
