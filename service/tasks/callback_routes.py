"""Qingbo's callbacks: token-checked; a callback only triggers a re-read (its body is no
evidence of anything, only a hint of how soon)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from service.errors import InvalidRequest, NotFound
from service.openapi import error_responses
from service.tasks.tracking import accept_callback, says_finished
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
    request: Request,
    conn: DbConn,
    redis: AppRedis,
    settings: AppSettings,
    token: Annotated[str, Query(max_length=200), Storable] = "",
) -> Any:
    """Receives Qingbo's task callbacks; the task is re-read from Qingbo. The body is not
    trusted: its status only says how soon."""
    finished = says_finished(await request.body())
    await accept_callback(conn, redis, settings, task_id=task_id, token=token, finished=finished)
    return {"ok": True}
