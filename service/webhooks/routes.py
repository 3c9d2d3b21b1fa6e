"""The delivery log and re-sends (teams), bulk re-send and secret rotation (admins)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path
from redis.exceptions import RedisError

from service.deps import AdminCtx, AppResources, Resources, TeamCtx, require_admin
from service.errors import InvalidRequest, NotFound, Unauthorized
from service.openapi import error_responses
from service.tasks.queue import enqueue_delivery
from service.types import Storable
from service.webhooks import repository, service
from service.webhooks.schemas import (
    AdminDeliveryList,
    Delivery,
    DeliveryList,
    Redelivered,
    RedeliverFailed,
    RotatedSecret,
)

router = APIRouter(tags=["webhooks"])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
TaskId = Annotated[str, Path(max_length=100), Storable]
DeliveryId = Annotated[str, Path(max_length=100), Storable]


async def _send_now(res: Resources, event_id: str) -> None:
    # If Redis is down the sweeper cron picks the event up (it is due in Postgres).
    with contextlib.suppress(RedisError, OSError):
        await enqueue_delivery(
            res.redis, res.settings.arq_queue_name, event_id, f"resend-{uuid.uuid4().hex}"
        )


@router.get(
    "/v1/tasks/{task_id}/deliveries",
    response_model=DeliveryList,
    summary="The task's webhook deliveries",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def list_deliveries(task_id: TaskId, ctx: TeamCtx) -> Any:
    """Every event sent (or to be sent) to the task's callback_url, oldest first, with each
    attempt: time, HTTP status, latency, the receiver's answer headers, the error. The
    answer's body is not shown here (the admin API shows its first bytes)."""
    return await service.delivery_log(
        ctx.conn, task_id=task_id, team_id=ctx.caller.team_id, with_bodies=False
    )


@admin.get(
    "/tasks/{task_id}/deliveries",
    response_model=AdminDeliveryList,
    summary="Any task's webhook deliveries, with the answers' first bytes",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def admin_list_deliveries(task_id: TaskId, res: AppResources) -> Any:
    """The team's delivery log plus the first 512 bytes of each answer, for operators
    debugging a receiver."""
    async with res.pool.acquire() as conn:
        return await service.delivery_log(conn, task_id=task_id, team_id=None, with_bodies=True)


@router.post(
    "/v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver",
    response_model=Delivery,
    summary="Send a webhook again now",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def redeliver(task_id: TaskId, delivery_id: DeliveryId, ctx: TeamCtx) -> Any:
    """Send the event again now, with the same webhook-id and a fresh signature, whatever
    its status; a delivered event is sent once more (receivers de-duplicate on the id)."""
    row = await repository.redeliver(
        ctx.conn, event_id=delivery_id, task_id=task_id, team_id=ctx.caller.team_id
    )
    if row is None:
        raise NotFound(f"delivery {delivery_id} of task {task_id} not found")
    await _send_now(ctx.res, delivery_id)
    return dict(row)


@admin.post(
    "/teams/{team_id}/webhooks/redeliver-failed",
    response_model=Redelivered,
    summary="Re-send a team's failed webhooks",
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def redeliver_failed(team_id: UUID, body: RedeliverFailed, res: AppResources) -> Any:
    """Every event of the team that failed (retries used up) since `since` goes out again."""
    async with res.pool.acquire() as conn:
        rows = await repository.redeliver_failed(conn, team_id=team_id, since=body.since)
    for row in rows:
        await _send_now(res, row["id"])
    return {"redelivered": len(rows)}


@admin.post(
    "/teams/{team_id}/webhook-secret/rotate",
    response_model=RotatedSecret,
    summary="Rotate a team's webhook secret",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def rotate_secret(team_id: UUID, ctx: AdminCtx) -> Any:
    """A new `whsec_` secret signs from now on; the previous one keeps signing beside it
    for QGW_WEBHOOK_SECRET_GRACE_SECONDS so receivers can switch without missing one."""
    row = await service.rotate_secret(
        ctx.conn,
        team_id=team_id,
        grace_seconds=ctx.res.settings.webhook_secret_grace_seconds,
        audit=ctx.audit,
    )
    return {
        "team_id": str(row["id"]),
        "webhook_secret": row["webhook_secret"],
        "previous_secret_expires_at": row["previous_secret_expires_at"],
    }
