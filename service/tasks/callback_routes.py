"""Qingbo's callbacks: token-checked, body ignored; a callback only triggers a re-read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from service.errors import InvalidRequest, NotFound
from service.openapi import error_responses
from service.tasks.tracking import accept_callback
from service.types import Storable
from service.web import AppRedis, AppSettings, DbConn

router = APIRouter(tags=["internal"])


@router.post(
    "/internal/qingbo/callback/{task_id}",
    summary="Qingbo callback",
    responses=error_responses(InvalidRequest, NotFound),
)
async def qingbo_callback(
    task_id: Annotated[str, Path(max_length=100), Storable],
    conn: DbConn,
    redis: AppRedis,
    settings: AppSettings,
    token: Annotated[str, Query(max_length=200), Storable] = "",
) -> Any:
    """Receives Qingbo's task callbacks; the task is re-read from Qingbo, the body is not used."""
    await accept_callback(conn, redis, settings, task_id=task_id, token=token)
    return {"ok": True}
