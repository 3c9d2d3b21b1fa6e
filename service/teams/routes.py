"""Admin endpoints for teams and their API keys (Bearer QGW_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from service.audit.deps import AdminCtx
from service.catalog.engine import Catalog
from service.platform.errors import InvalidRequest, NotFound, Unauthorized
from service.platform.openapi import error_responses
from service.teams import service
from service.teams.schemas import (
    IssuedKey,
    KeyCreate,
    KeyList,
    Team,
    TeamCreate,
    TeamList,
    TeamPatch,
)
from service.web import AdminRoute, DbConn, Egress, require_admin, shared

# Admin routes authenticate before they read a body (service/web.py::GuardedRoute).
router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], route_class=AdminRoute
)


@router.post(
    "/teams",
    response_model=Team,
    status_code=201,
    summary="Create a team",
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def create_team(body: TeamCreate, ctx: AdminCtx, egress: Egress, request: Request) -> Any:
    """Create a team with optional limits; the answer carries its webhook secret."""
    return dict(
        await service.create_team(
            ctx.conn, body=body, audit=ctx.audit, egress=egress, catalog=_catalog(request)
        )
    )


def _catalog(request: Request) -> Catalog:
    """The catalog in force in this process: allow-lists name its models and families."""
    catalog: Catalog = request.app.state.resources.catalog
    return catalog


@router.get(
    "/teams", response_model=TeamList, summary="List teams", responses=error_responses(Unauthorized)
)
async def list_teams(conn: DbConn) -> Any:
    """Every team, oldest first."""
    return {"data": [dict(r) for r in await service.list_teams(conn)]}


@router.get(
    "/teams/{team_id}",
    response_model=Team,
    summary="Get a team",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def get_team(team_id: UUID, conn: DbConn) -> Any:
    """One team and its limits."""
    return dict(await service.get_team(conn, team_id=team_id))


@router.patch(
    "/teams/{team_id}",
    response_model=Team,
    summary="Change a team",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def patch_team(
    team_id: UUID, body: TeamPatch, ctx: AdminCtx, egress: Egress, request: Request
) -> Any:
    """Change a team's name, limits or answer version; fields left out stay as they are,
    null clears a limit."""
    row = await service.patch_team(
        ctx.conn,
        team_id=team_id,
        body=body,
        audit=ctx.audit,
        egress=egress,
        catalog=_catalog(request),
    )
    _forget_callers(request)
    return dict(row)


@router.post(
    "/teams/{team_id}/keys",
    response_model=IssuedKey,
    status_code=201,
    summary="Issue an API key",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def issue_key(team_id: UUID, body: KeyCreate, ctx: AdminCtx) -> Any:
    """Issue a key for the team, optionally expiring; the key is in this answer only, it is
    stored hashed."""
    row, key = await service.issue_key(ctx.conn, team_id=team_id, body=body, audit=ctx.audit)
    return {**dict(row), "key": key}


@router.get(
    "/teams/{team_id}/keys",
    response_model=KeyList,
    summary="List a team's API keys",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def list_keys(team_id: UUID, ctx: AdminCtx) -> Any:
    """The team's keys, oldest first: prefix, name, expiry, revocation and last use (never
    the key)."""
    return {"data": [dict(r) for r in await service.list_keys(ctx.conn, team_id=team_id)]}


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    summary="Revoke an API key",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def revoke_key(key_id: UUID, ctx: AdminCtx, request: Request) -> Response:
    """Revoke a key at once; requests with it answer 401 from then on."""
    await service.revoke_key(ctx.conn, key_id=key_id, audit=ctx.audit)
    _forget_callers(request)
    return Response(status_code=204)


def _forget_callers(request: Request) -> None:
    """The change has committed: this process forgets its cached callers now, not when
    the trigger's notification (which tells every other process) arrives."""
    shared(request).keys.forget_all()
