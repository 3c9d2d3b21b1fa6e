"""The delivery log and re-sends (teams), bulk re-send and secret rotation (admins)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request

from service.audit.deps import AdminCtx
from service.platform.errors import InvalidRequest, NotFound, RateLimited, Unauthorized
from service.platform.openapi import error_responses
from service.platform.types import Storable
from service.teams.auth import TeamCtx
from service.web import AdminRoute, AppRedis, AppSettings, DbConn, require_admin, shared
from service.webhooks import service
from service.webhooks.schemas import (
    AdminDeliveryList,
    Delivery,
    DeliveryList,
    Redelivered,
    RedeliverFailed,
    RotatedSecret,
)

router = APIRouter(tags=["webhooks"])
# Admin routes authenticate before they read a body (service/web.py::GuardedRoute).
admin = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], route_class=AdminRoute
)
TaskId = Annotated[str, Path(max_length=100), Storable]
DeliveryId = Annotated[str, Path(max_length=100), Storable]


@router.get(
    "/v1/tasks/{task_id}/deliveries",
    response_model=DeliveryList,
    summary="The task's webhook deliveries",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def list_deliveries(task_id: TaskId, ctx: TeamCtx) -> Any:
    """Every event sent (or to be sent) to the task's callback_url, oldest first, with each
    attempt: time, HTTP status, latency, the receiver's answer headers, the error's generic
    class. The answer's body and the error's detail are not shown here (the admin API
    shows them)."""
    return await service.delivery_log(
        ctx.conn, task_id=task_id, team_id=ctx.caller.team_id, with_bodies=False
    )


@admin.get(
    "/tasks/{task_id}/deliveries",
    response_model=AdminDeliveryList,
    summary="Any task's webhook deliveries, with the answers' first bytes",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def admin_list_deliveries(task_id: TaskId, conn: DbConn) -> Any:
    """The team's delivery log plus the first 512 bytes of each answer and each error's
    detail, for operators debugging a receiver."""
    return await service.delivery_log(conn, task_id=task_id, team_id=None, with_bodies=True)


@router.post(
    "/v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver",
    response_model=Delivery,
    summary="Send a webhook again now",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound, RateLimited),
)
async def redeliver(
    task_id: TaskId,
    delivery_id: DeliveryId,
    ctx: TeamCtx,
    redis: AppRedis,
    settings: AppSettings,
    request: Request,
) -> Any:
    """Send the event again now, with the same webhook-id and a fresh signature, whatever
    its status; a delivered event is sent once more (receivers de-duplicate on the id).
    At most QGW_WEBHOOK_REDELIVERIES_PER_MINUTE per team (429 `rate_limited` beyond)."""
    row = await service.redeliver(
        ctx.conn,
        redis,
        queue=settings.arq_queue_name,
        event_id=delivery_id,
        task_id=task_id,
        team_id=ctx.caller.team_id,
        limiter=shared(request).limiter,
        per_minute=settings.webhook_redeliveries_per_minute,
    )
    return dict(row)


@admin.post(
    "/teams/{team_id}/webhooks/redeliver-failed",
    response_model=Redelivered,
    summary="Re-send a team's failed webhooks",
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def redeliver_failed(
    team_id: UUID, body: RedeliverFailed, conn: DbConn, redis: AppRedis, settings: AppSettings
) -> Any:
    """Every event of the team that failed (retries used up) since `since` goes out again."""
    count = await service.redeliver_failed(
        conn, redis, queue=settings.arq_queue_name, team_id=team_id, since=body.since
    )
    return {"redelivered": count}


@admin.post(
    "/teams/{team_id}/webhook-secret/rotate",
    response_model=RotatedSecret,
    summary="Rotate a team's webhook secret",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def rotate_secret(team_id: UUID, ctx: AdminCtx, settings: AppSettings) -> Any:
    """A new `whsec_` secret signs from now on; the previous one keeps signing beside it
    for QGW_WEBHOOK_SECRET_GRACE_SECONDS so receivers can switch without missing one."""
    row = await service.rotate_secret(
        ctx.conn,
        team_id=team_id,
        grace_seconds=settings.webhook_secret_grace_seconds,
        audit=ctx.audit,
    )
    return {
        "team_id": str(row["id"]),
        "webhook_secret": row["webhook_secret"],
        "previous_secret_expires_at": row["previous_secret_expires_at"],
    }
