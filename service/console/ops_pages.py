"""Operations at a glance and the audit trail (admins only)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response

from service.audit import service as audit
from service.budgets import service as budgets
from service.console.deps import Conn, ConsoleRoute, CurrentViewer, page, require_admin_view
from service.console.money_pages import WINDOWS
from service.platform.errors import InvalidRequest
from service.tasks.operations import operations_overview
from service.web import shared

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
AUDIT_PAGE = 50


@router.get("/console/operations")
async def operations(
    request: Request,
    viewer: CurrentViewer,
    conn: Conn,
    target: str | None = None,
    action: str | None = None,
    since: str | None = None,
    cursor: str | None = None,
) -> Response:
    require_admin_view(viewer)
    res = shared(request)
    overview = await operations_overview(conn, settings=res.settings, now=res.clock())
    entries = await audit.list_entries(
        conn,
        target=(target or "").strip()[:100] or None,
        action=action or None,
        since=_day(since, res.settings.budget_timezone) if since else None,
        cursor=cursor or None,
        limit=AUDIT_PAGE,
    )
    company = await budgets.scope_budgets(
        conn, scope="company", now=res.clock(), timezone=res.settings.budget_timezone
    )
    filters = {"target": target or "", "action": action or "", "since": since or ""}
    next_query = None
    if entries["next_cursor"]:
        next_query = {k: v for k, v in filters.items() if v} | {"cursor": entries["next_cursor"]}
    return page(
        request,
        "operations.html",
        viewer,
        nav="operations",
        ops=overview,
        company=company["budgets"],
        windows=WINDOWS,
        entries=entries["data"],
        filters=filters,
        actions=audit.ACTIONS,
        next_query=next_query,
    )


def _day(text: str, timezone: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=ZoneInfo(timezone))
    except ValueError:
        raise InvalidRequest("since: a date, e.g. 2026-11-01", param="since") from None
