"""GET /admin/audit: the append-only trail of admin changes, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.audit.schemas import AuditList
from service.audit.service import list_entries
from service.platform.errors import InvalidRequest, Unauthorized
from service.platform.openapi import error_responses
from service.platform.types import Storable
from service.web import DbConn, require_admin

admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@admin.get(
    "/audit",
    response_model=AuditList,
    summary="The audit trail of admin changes",
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def list_audit(
    conn: DbConn,
    target: Annotated[
        str | None, Query(max_length=100, description="A team or key id, or company"), Storable
    ] = None,
    action: Annotated[str | None, Query(max_length=50), Storable] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=30), Storable] = None,
) -> Any:
    """Every admin change (teams, keys, budgets at any scope, webhook secrets, answer
    versions): who, when, from where, before and after; page with next_cursor."""
    return await list_entries(
        conn, target=target, action=action, since=since, cursor=cursor, limit=limit
    )
