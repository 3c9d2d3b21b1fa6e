"""Budget administration, and usage for teams (own) and admins (any team)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query

from service.audit.deps import AdminCtx
from service.budgets import disputes, service
from service.budgets.errors import DisputeResolved
from service.budgets.schemas import Budgets, BudgetsPut, Dispute, Disputes, Usage
from service.platform.errors import InvalidRequest, NotFound, Unauthorized
from service.platform.openapi import error_responses
from service.teams.auth import TeamCtx
from service.web import AdminRoute, AppSettings, Clock, DbConn, require_admin

# A dispute's id is a Postgres bigint: anything larger names no dispute (400, not a 500).
DisputeId = Annotated[int, Path(ge=1, le=2**63 - 1)]

router = APIRouter()
# Admin routes authenticate before they read a body (service/web.py::GuardedRoute).
admin = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], route_class=AdminRoute
)


@router.get(
    "/v1/usage",
    response_model=Usage,
    tags=["usage"],
    summary="The team's budgets and spend",
    responses=error_responses(Unauthorized),
)
async def own_usage(ctx: TeamCtx, settings: AppSettings, clock: Clock) -> Any:
    """Every budget that covers the team's tasks (company, team, each key) in its current
    window: limit, spent, reserved, remaining, when it resets, and a breakdown by model."""
    return await service.team_usage(
        ctx.conn,
        team_id=ctx.caller.team_id,
        now=clock(),
        timezone=settings.budget_timezone,
    )


@admin.get(
    "/teams/{team_id}/usage",
    response_model=Usage,
    summary="A team's budgets and spend",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def team_usage(team_id: UUID, conn: DbConn, settings: AppSettings, clock: Clock) -> Any:
    """As `GET /v1/usage`, for any team."""
    return await service.team_usage(
        conn, team_id=team_id, now=clock(), timezone=settings.budget_timezone
    )


_BUDGET_DOC = (
    "Windows: `day`, `week` (starts Monday), `month` (calendar, in QGW_BUDGET_TIMEZONE) "
    "and `total`. The body is the complete set: windows left out are removed (their "
    "history is kept). Lowering a limit below what is spent blocks new tasks; it never "
    "cancels admitted ones."
)


@admin.put(
    "/budgets",
    response_model=Budgets,
    summary="Set the company-wide budgets",
    description=_BUDGET_DOC,
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def put_company_budgets(
    body: BudgetsPut, ctx: AdminCtx, settings: AppSettings, clock: Clock
) -> Any:
    return await service.replace_scope_budgets(
        ctx.conn,
        scope="company",
        budgets=body.budgets,
        audit=ctx.audit,
        now=clock(),
        timezone=settings.budget_timezone,
    )


@admin.get(
    "/budgets",
    response_model=Budgets,
    summary="The company-wide budgets",
    responses=error_responses(Unauthorized),
)
async def get_company_budgets(conn: DbConn, settings: AppSettings, clock: Clock) -> Any:
    """Each company budget in its current window."""
    return await service.scope_budgets(
        conn, scope="company", now=clock(), timezone=settings.budget_timezone
    )


@admin.put(
    "/teams/{team_id}/budgets",
    response_model=Budgets,
    summary="Set a team's budgets",
    description=_BUDGET_DOC,
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def put_team_budgets(
    team_id: UUID, body: BudgetsPut, ctx: AdminCtx, settings: AppSettings, clock: Clock
) -> Any:
    return await service.replace_scope_budgets(
        ctx.conn,
        scope="team",
        team_id=team_id,
        budgets=body.budgets,
        audit=ctx.audit,
        now=clock(),
        timezone=settings.budget_timezone,
    )


@admin.get(
    "/teams/{team_id}/budgets",
    response_model=Budgets,
    summary="A team's budgets",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def get_team_budgets(team_id: UUID, conn: DbConn, settings: AppSettings, clock: Clock) -> Any:
    """Each budget of the team in its current window."""
    return await service.scope_budgets(
        conn, scope="team", team_id=team_id, now=clock(), timezone=settings.budget_timezone
    )


@admin.put(
    "/keys/{key_id}/budgets",
    response_model=Budgets,
    summary="Set an API key's budgets",
    description=_BUDGET_DOC + " A key's budgets apply inside its team's and the company's.",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def put_key_budgets(
    key_id: UUID, body: BudgetsPut, ctx: AdminCtx, settings: AppSettings, clock: Clock
) -> Any:
    return await service.replace_scope_budgets(
        ctx.conn,
        scope="key",
        api_key_id=key_id,
        budgets=body.budgets,
        audit=ctx.audit,
        now=clock(),
        timezone=settings.budget_timezone,
    )


@admin.get(
    "/keys/{key_id}/budgets",
    response_model=Budgets,
    summary="An API key's budgets",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def get_key_budgets(key_id: UUID, conn: DbConn, settings: AppSettings, clock: Clock) -> Any:
    """Each budget of the key in its current window."""
    return await service.scope_budgets(
        conn, scope="key", api_key_id=key_id, now=clock(), timezone=settings.budget_timezone
    )


@admin.get(
    "/disputes",
    response_model=Disputes,
    summary="Charge disputes",
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def list_disputes(
    conn: DbConn,
    status: Literal["open", "accepted", "rejected"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Charges Qingbo reported beyond the cap (the reservation times
    QGW_CHARGE_CAP_FACTOR), oldest first: the budgets were charged the cap."""
    return await disputes.list_disputes(conn, status=status, limit=limit)


@admin.post(
    "/disputes/{dispute_id}/accept",
    response_model=Dispute,
    summary="Accept a charge dispute",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound, DisputeResolved),
)
async def accept_dispute(dispute_id: DisputeId, ctx: AdminCtx) -> Any:
    """Charge the disputed excess to every budget the task covered, its spend and reports
    (audited); only an open dispute."""
    return await disputes.resolve(ctx.conn, dispute_id=dispute_id, accept=True, audit=ctx.audit)


@admin.post(
    "/disputes/{dispute_id}/reject",
    response_model=Dispute,
    summary="Reject a charge dispute",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound, DisputeResolved),
)
async def reject_dispute(dispute_id: DisputeId, ctx: AdminCtx) -> Any:
    """The capped charge stands; nothing else changes (audited); only an open dispute."""
    return await disputes.resolve(ctx.conn, dispute_id=dispute_id, accept=False, audit=ctx.audit)
