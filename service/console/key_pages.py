"""Keys: the team's keys (never the key itself); admins issue one (shown once) and revoke."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.console.deps import (
    Conn,
    ConsoleRoute,
    CurrentViewer,
    change_form,
    page,
    parse_id,
    require_admin_view,
    see_other,
    team_of,
    team_view,
)
from service.console.money_pages import audit_of, checked
from service.platform.errors import InvalidRequest
from service.platform.types import whole_number
from service.teams import service as teams
from service.teams.schemas import KeyCreate
from service.web import shared

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/console/keys")
async def key_list(
    request: Request, viewer: CurrentViewer, conn: Conn, team: str | None = None
) -> Response:
    view = await team_view(viewer, conn, team)
    keys = await teams.list_keys(conn, team_id=view.caller.team_id) if view.caller else []
    return page(request, "keys.html", viewer, view=view, nav="keys", keys=keys, issued=None)


@router.post("/console/teams/{team_id}/keys")
async def issue(request: Request, team_id: str, viewer: CurrentViewer, conn: Conn) -> Response:
    """A new key, on this answer only (no-store): the page offers to copy it."""
    require_admin_view(viewer)
    form = await change_form(request, viewer)
    caller = await team_of(conn, parse_id(team_id, "team"))
    days = str(form.get("expires_in_days") or "").strip()
    if days and whole_number(days, max_digits=5) is None:  # "²" passes isdigit()
        raise InvalidRequest("expires_in_days: a whole number of days", param="expires_in_days")
    body = checked(
        KeyCreate,
        {
            "name": str(form.get("name") or "").strip() or "default",
            "expires_in_days": int(days) if days else None,
        },
    )
    row, key = await teams.issue_key(
        conn, team_id=caller.team_id, body=body, audit=audit_of(request, viewer)
    )
    view = await team_view(viewer, conn, str(caller.team_id))
    keys = await teams.list_keys(conn, team_id=caller.team_id)
    return page(
        request,
        "keys.html",
        viewer,
        view=view,
        nav="keys",
        keys=keys,
        issued={"key": key, "name": row["name"], "prefix": row["prefix"]},
    )


@router.post("/console/keys/{key_id}/revoke")
async def revoke(request: Request, key_id: str, viewer: CurrentViewer, conn: Conn) -> Response:
    require_admin_view(viewer)
    form = await change_form(request, viewer)
    await teams.revoke_key(conn, key_id=parse_id(key_id, "key"), audit=audit_of(request, viewer))
    shared(request).keys.forget_all()  # as the admin API does: cached callers are stale
    team = str(form.get("team") or "")
    return see_other("/console/keys" + (f"?team={parse_id(team, 'team')}" if team else ""))
