"""Budget administration, and usage for teams (own) and admins (any team)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends

from service.budgets import service
from service.budgets.schemas import Budgets, BudgetsPut, Usage
from service.deps import AdminCtx, AdminRequest, AppResources, Resources, TeamCtx, require_admin
from service.errors import InvalidRequest, NotFound, Unauthorized
from service.openapi import error_responses

router = APIRouter()
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get(
    "/v1/usage",
    response_model=Usage,
    tags=["usage"],
    summary="The team's budgets and spend",
    responses=error_responses(Unauthorized),
)
async def own_usage(ctx: TeamCtx) -> Any:
    """Every budget that covers the team's tasks (company, team, each key) in its current
    window: limit, spent, reserved, remaining, when it resets, and a breakdown by model."""
    return await service.team_usage(
        ctx.conn,
        team_id=ctx.caller.team_id,
        now=ctx.res.clock(),
        timezone=ctx.res.settings.budget_timezone,
    )


@admin.get(
    "/teams/{team_id}/usage",
    response_model=Usage,
    summary="A team's budgets and spend",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def team_usage(team_id: UUID, res: AppResources) -> Any:
    """As `GET /v1/usage`, for any team."""
    async with res.pool.acquire() as conn:
        return await service.team_usage(
            conn, team_id=team_id, now=res.clock(), timezone=res.settings.budget_timezone
        )


async def _standing(
    res: Resources,
    conn: Any,
    *,
    scope: str,
    team_id: UUID | None = None,
    api_key_id: UUID | None = None,
) -> dict[str, Any]:
    if scope == "key":
        team_id = await service.key_team(conn, api_key_id)
    elif scope == "team" and not await service.team_exists(conn, team_id):
        raise NotFound("team not found")
    return await service.scope_budgets(
        conn,
        scope=scope,
        team_id=team_id,
        api_key_id=api_key_id,
        now=res.clock(),
        timezone=res.settings.budget_timezone,
    )


async def _put(
    ctx: AdminRequest,
    body: BudgetsPut,
    *,
    scope: str,
    team_id: UUID | None = None,
    api_key_id: UUID | None = None,
) -> dict[str, Any]:
    await service.set_budgets(
        ctx.conn,
        scope=scope,
        team_id=team_id,
        api_key_id=api_key_id,
        budgets=body.budgets,
        audit=ctx.audit,
    )
    return await _standing(ctx.res, ctx.conn, scope=scope, team_id=team_id, api_key_id=api_key_id)


async def _get(
    res: Resources, *, scope: str, team_id: UUID | None = None, api_key_id: UUID | None = None
) -> dict[str, Any]:
    async with res.pool.acquire() as conn:
        return await _standing(res, conn, scope=scope, team_id=team_id, api_key_id=api_key_id)


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
async def put_company_budgets(body: BudgetsPut, ctx: AdminCtx) -> Any:
    return await _put(ctx, body, scope="company")


@admin.get(
    "/budgets",
    response_model=Budgets,
    summary="The company-wide budgets",
    responses=error_responses(Unauthorized),
)
async def get_company_budgets(res: AppResources) -> Any:
    """Each company budget in its current window."""
    return await _get(res, scope="company")


@admin.put(
    "/teams/{team_id}/budgets",
    response_model=Budgets,
    summary="Set a team's budgets",
    description=_BUDGET_DOC,
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def put_team_budgets(team_id: UUID, body: BudgetsPut, ctx: AdminCtx) -> Any:
    return await _put(ctx, body, scope="team", team_id=team_id)


@admin.get(
    "/teams/{team_id}/budgets",
    response_model=Budgets,
    summary="A team's budgets",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def get_team_budgets(team_id: UUID, res: AppResources) -> Any:
    """Each budget of the team in its current window."""
    return await _get(res, scope="team", team_id=team_id)


@admin.put(
    "/keys/{key_id}/budgets",
    response_model=Budgets,
    summary="Set an API key's budgets",
    description=_BUDGET_DOC + " A key's budgets apply inside its team's and the company's.",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def put_key_budgets(key_id: UUID, body: BudgetsPut, ctx: AdminCtx) -> Any:
    return await _put(ctx, body, scope="key", api_key_id=key_id)


@admin.get(
    "/keys/{key_id}/budgets",
    response_model=Budgets,
    summary="An API key's budgets",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def get_key_budgets(key_id: UUID, res: AppResources) -> Any:
    """Each budget of the key in its current window."""
    return await _get(res, scope="key", api_key_id=key_id)
