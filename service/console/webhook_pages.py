"""Webhooks: the team's delivery log, a task's (on its page), redelivery, and (admins) the
team's signing secret rotated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from service.console.deps import (
    Conn,
    ConsoleRoute,
    CurrentViewer,
    change_form,
    page,
    parse_id,
    require_admin_view,
    see_other,
    team_view,
)
from service.console.money_pages import audit_of
from service.console.task_pages import task_caller
from service.web import shared
from service.webhooks import service as webhooks

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
Id = Annotated[str, Path(max_length=100)]


@router.get("/console/webhooks")
async def delivery_log(
    request: Request,
    viewer: CurrentViewer,
    conn: Conn,
    team: str | None = None,
    status: str | None = None,
) -> Response:
    view = await team_view(viewer, conn, team)
    events = []
    if view.team_id is not None:
        events = await webhooks.team_delivery_log(conn, team_id=view.team_id, status=status or None)
    return page(
        request,
        "webhooks.html",
        viewer,
        view=view,
        nav="webhooks",
        events=events,
        chosen_status=status or "",
        statuses=webhooks.DELIVERY_STATUSES,
        rotated=None,
    )


@router.post("/console/tasks/{task_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(
    request: Request, task_id: Id, delivery_id: Id, viewer: CurrentViewer, conn: Conn
) -> Response:
    await change_form(request, viewer)
    caller = await task_caller(viewer, conn, task_id)
    res = shared(request)
    await webhooks.redeliver(
        conn,
        res.redis,
        queue=res.settings.arq_queue_name,
        event_id=delivery_id,
        task_id=task_id,
        team_id=caller.team_id,
        limiter=res.limiter,
        per_minute=res.settings.webhook_redeliveries_per_minute,
    )
    return see_other(f"/console/tasks/{task_id}#deliveries")


@router.post("/console/teams/{team_id}/webhook-secret/rotate")
async def rotate(request: Request, team_id: str, viewer: CurrentViewer, conn: Conn) -> Response:
    """A new secret, shown on this answer only; the previous one signs beside it a while."""
    require_admin_view(viewer)
    await change_form(request, viewer)
    res = shared(request)
    row = await webhooks.rotate_secret(
        conn,
        team_id=parse_id(team_id, "team"),
        grace_seconds=res.settings.webhook_secret_grace_seconds,
        audit=audit_of(request, viewer),
    )
    view = await team_view(viewer, conn, team_id)
    events = await webhooks.team_delivery_log(conn, team_id=row["id"], status=None)
    return page(
        request,
        "webhooks.html",
        viewer,
        view=view,
        nav="webhooks",
        events=events,
        chosen_status="",
        statuses=webhooks.DELIVERY_STATUSES,
        rotated=row,
    )
