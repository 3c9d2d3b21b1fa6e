"""Spend reports for teams (their own) and admins (any team, or all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from service.catalog.engine import Catalog
from service.platform.errors import InvalidRequest, Unauthorized
from service.platform.openapi import error_responses
from service.platform.types import Storable
from service.spend import service
from service.spend.schemas import SpendReport
from service.teams.auth import TeamCtx
from service.web import AppSettings, Clock, DbConn, require_admin, shared

router = APIRouter(tags=["usage"])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

GroupBy = Annotated[
    list[Annotated[str, Storable]],
    Query(
        max_length=4,
        description="Any of day, week, month, model, family, resolution, key, status, "
        "metadata.<key> "
        "(admin: team too); repeat to group by several",
    ),
]
From = Annotated[
    str | None,
    Query(alias="from", max_length=40, description="Day (budget time zone) or ISO 8601 time"),
    Storable,
]
To = Annotated[
    str | None,
    Query(max_length=40, description="Exclusive; default now (from defaults to this month)"),
    Storable,
]
Format = Annotated[Literal["json", "csv"] | None, Query(description="Or Accept: text/csv")]
CSV_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


@dataclass(frozen=True)
class ReportParams:
    from_: str | None
    to: str | None
    group_by: list[str]
    format: str | None
    accept: str | None


def report_params(
    from_: From = None,
    to: To = None,
    group_by: GroupBy = [],  # noqa: B006 (FastAPI copies query defaults)
    format: Format = None,
    accept: Annotated[str | None, Header(), Storable] = None,
) -> ReportParams:
    return ReportParams(from_=from_, to=to, group_by=group_by, format=format, accept=accept)


Params = Annotated[ReportParams, Depends(report_params)]


async def catalog_in_force(request: Request) -> Catalog:
    """The catalog this process uses: it names each model's family (group_by=family)."""
    catalog: Catalog = shared(request).catalog
    return catalog


InForce = Annotated[Catalog, Depends(catalog_in_force)]


def _answer(report: dict[str, Any], params: ReportParams) -> Any:
    """JSON, or CSV with `?format=csv` / `Accept: text/csv`."""
    wants_csv = params.format == "csv" or (
        params.format is None and "text/csv" in (params.accept or "")
    )
    if wants_csv:
        return Response(
            service.report_csv(report),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="spend-report.csv"'},
        )
    return report


@router.get(
    "/v1/usage/report",
    response_model=SpendReport,
    summary="The team's spend, grouped",
    responses={**CSV_ANSWER, **error_responses(InvalidRequest, Unauthorized)},
)
async def team_report(
    ctx: TeamCtx, params: Params, settings: AppSettings, clock: Clock, catalog: InForce
) -> Any:
    """Settled spend and task counts of the team's finished tasks admitted in [from, to),
    grouped; JSON, or CSV with `?format=csv` / `Accept: text/csv`."""
    report = await service.spend_report(
        ctx.conn,
        from_=params.from_,
        to=params.to,
        group_by=params.group_by,
        timezone=settings.budget_timezone,
        now=clock(),
        team_id=ctx.caller.team_id,
        admin=False,
        catalog=catalog,
    )
    return _answer(report, params)


@admin.get(
    "/usage/report",
    response_model=SpendReport,
    summary="Spend across teams, grouped",
    responses={**CSV_ANSWER, **error_responses(InvalidRequest, Unauthorized)},
)
async def admin_report(
    conn: DbConn,
    params: Params,
    settings: AppSettings,
    clock: Clock,
    catalog: InForce,
    team_id: UUID | None = None,
) -> Any:
    """As `GET /v1/usage/report` across every team (or `team_id`); `group_by=team` too."""
    report = await service.spend_report(
        conn,
        from_=params.from_,
        to=params.to,
        group_by=params.group_by,
        timezone=settings.budget_timezone,
        now=clock(),
        team_id=team_id,
        admin=True,
        catalog=catalog,
    )
    return _answer(report, params)
