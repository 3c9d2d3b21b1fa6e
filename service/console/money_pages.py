"""Money: spend by day, model, key and a metadata key (the report of GET /v1/usage/report,
also as CSV), the budgets as bars, and (admins) budgets and limits changed, audited."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError

from service.audit.service import AuditContext
from service.budgets import service as budgets
from service.budgets.schemas import BudgetLimit
from service.catalog.generations import all_model_ids
from service.catalog.rules import METADATA_KEY
from service.console.charts import bars, daily_bars
from service.console.deps import (
    Conn,
    ConsoleRoute,
    CurrentViewer,
    Viewer,
    change_form,
    page,
    parse_id,
    require_admin_view,
    see_other,
    team_of,
    team_view,
)
from service.platform.errors import InvalidRequest
from service.platform.logs import request_id_var
from service.platform.money import parse_usd
from service.platform.types import whole_number
from service.spend import service as spend
from service.teams import service as teams
from service.teams.schemas import TeamPatch
from service.web import shared

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
DAYS = 30
WINDOWS = ("day", "week", "month", "total")
GROUPS = ("model", "key")


def audit_of(request: Request, viewer: Viewer) -> AuditContext:
    """The signed-in admin as the trail's actor (named at sign-in), marked as the console."""
    return AuditContext(
        actor=f"{viewer.session.actor} (console)",
        source=request.client.host if request.client else None,
        request_id=request_id_var.get(),
    )


def checked(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """The form as the API's own schema, or 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


def last_days(request: Request) -> tuple[str, str]:
    """The last 30 days, today included, as the report's from and to (budget time zone)."""
    res = shared(request)
    today = res.clock().astimezone(ZoneInfo(res.settings.budget_timezone)).date()
    return (today - timedelta(days=DAYS - 1)).isoformat(), (today + timedelta(days=1)).isoformat()


def dimension(group: str | None, metadata_key: str | None) -> str:
    if metadata_key:
        if not METADATA_KEY.match(metadata_key):
            raise InvalidRequest("metadata_key: letters, digits, _ . -", param="metadata_key")
        return f"metadata.{metadata_key}"
    return group if group in GROUPS else "model"


async def report(
    request: Request, conn: Any, team_id: Any, group_by: str, from_: str, to: str
) -> dict[str, Any]:
    res = shared(request)
    return await spend.spend_report(
        conn,
        from_=from_,
        to=to,
        group_by=[group_by],
        timezone=res.settings.budget_timezone,
        now=res.clock(),
        team_id=team_id,
        admin=False,
    )


@router.get("/console/money")
async def money(
    request: Request,
    viewer: CurrentViewer,
    conn: Conn,
    team: str | None = None,
    group: str | None = None,
    metadata_key: str | None = None,
) -> Response:
    view = await team_view(viewer, conn, team)
    from_, to = last_days(request)
    group_by = dimension(group, metadata_key)
    context: dict[str, Any] = {"view": view, "nav": "money", "from_": from_, "to": to}
    if view.caller is not None:
        res = shared(request)
        daily = await report(request, conn, view.team_id, "day", from_, to)
        grouped = await report(request, conn, view.team_id, group_by, from_, to)
        usage = await budgets.team_usage(
            conn,
            team_id=view.caller.team_id,
            now=res.clock(),
            timezone=res.settings.budget_timezone,
        )
        levels = res.settings.alert_percents
        for budget in usage["budgets"]:
            budget["levels_crossed"] = [p for p in levels if budget["used_percent"] >= p]
            budget["spent_percent"] = _share(budget["spent_usd"], budget["limit_usd"])
            budget["reserved_percent"] = min(
                100 - budget["spent_percent"], _share(budget["reserved_usd"], budget["limit_usd"])
            )
        context |= {
            "daily": daily_bars(daily["rows"], date.fromisoformat(from_), DAYS),
            "daily_total": daily["total"],
            "grouped": bars(grouped["rows"], group_by),
            "grouped_total": grouped["total"],
            "group_by": group_by,
            "usage": usage,
            "team_row": await teams.get_team(conn, team_id=view.caller.team_id)
            if viewer.admin
            else None,
            "team_budgets": {
                b["window"]: b["limit_usd"] for b in usage["budgets"] if b["scope"] == "team"
            },
            "windows": WINDOWS,
            "models": all_model_ids(),
        }
    return page(request, "money.html", viewer, **context)


def _share(part: str, whole: str) -> int:
    limit = parse_usd(whole)
    return min(100, parse_usd(part) * 100 // limit) if limit else 100


@router.get("/console/money/spend.csv")
async def spend_csv(
    request: Request,
    viewer: CurrentViewer,
    conn: Conn,
    team: str | None = None,
    group: str | None = None,
    metadata_key: str | None = None,
) -> Response:
    """What the chart shows, as GET /v1/usage/report?format=csv answers it."""
    view = await team_view(viewer, conn, team)
    if view.caller is None:
        raise InvalidRequest("no team to report on", param="team")
    from_, to = last_days(request)
    group_by = "day" if group == "day" else dimension(group, metadata_key)
    shown = await report(request, conn, view.team_id, group_by, from_, to)
    name = f"spend-{group_by.replace('.', '-')}-{from_}-{to}.csv"
    return Response(
        spend.report_csv(shown),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/console/teams/{team_id}/budgets")
async def set_team_budgets(
    request: Request, team_id: str, viewer: CurrentViewer, conn: Conn
) -> Response:
    """The team's budgets (the complete set: an empty window removes it), audited."""
    require_admin_view(viewer)
    form = await change_form(request, viewer)
    caller = await team_of(conn, parse_id(team_id, "team"))
    await _replace_budgets(request, viewer, conn, form, scope="team", team_id=caller.team_id)
    return see_other(f"/console/money?team={caller.team_id}")


@router.post("/console/company/budgets")
async def set_company_budgets(request: Request, viewer: CurrentViewer, conn: Conn) -> Response:
    """The company-wide budgets (the complete set), audited."""
    require_admin_view(viewer)
    form = await change_form(request, viewer)
    await _replace_budgets(request, viewer, conn, form, scope="company", team_id=None)
    return see_other("/console/operations#company-budgets")


async def _replace_budgets(
    request: Request, viewer: Viewer, conn: Any, form: Any, *, scope: str, team_id: Any
) -> None:
    """The form's `limit_<window>` fields as the scope's complete set (empty: none)."""
    limits = [
        checked(BudgetLimit, {"window": w, "limit_usd": str(form.get(f"limit_{w}") or "").strip()})
        for w in WINDOWS
        if str(form.get(f"limit_{w}") or "").strip()
    ]
    res = shared(request)
    await budgets.replace_scope_budgets(
        conn,
        scope=scope,
        team_id=team_id,
        budgets=limits,
        audit=audit_of(request, viewer),
        now=res.clock(),
        timezone=res.settings.budget_timezone,
    )


@router.post("/console/teams/{team_id}/limits")
async def set_team_limits(
    request: Request, team_id: str, viewer: CurrentViewer, conn: Conn
) -> Response:
    """RPM, concurrency and the model allow-list, through the admin API's own function."""
    require_admin_view(viewer)
    form = await change_form(request, viewer)
    caller = await team_of(conn, parse_id(team_id, "team"))
    changes: dict[str, Any] = {}
    for name in ("rpm_limit", "max_concurrent_tasks"):
        text = str(form.get(name) or "").strip()
        if text and whole_number(text, max_digits=9) is None:  # "²" passes isdigit()
            raise InvalidRequest(f"{name}: a whole number, or empty for no limit", param=name)
        changes[name] = int(text) if text else None
    models = [str(m) for m in form.getlist("allowed_models")]
    changes["allowed_models"] = None if form.get("all_models") == "on" else models
    body = checked(TeamPatch, changes)
    res = shared(request)
    await teams.patch_team(
        conn,
        team_id=caller.team_id,
        body=body,
        audit=audit_of(request, viewer),
        egress=res.egress,
        catalog=res.catalog,  # allow-lists name the models of the catalog in force
    )
    res.keys.forget_all()  # as the admin API does: this process's cached callers are stale
    return see_other(f"/console/money?team={caller.team_id}")
