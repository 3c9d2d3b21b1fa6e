"""Qingbo's callbacks: token-checked; a callback only triggers a re-read (its body is no
evidence of anything, only a hint of how soon)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from service.platform.errors import InvalidRequest, NotFound, PayloadTooLarge, RequestTimeout
from service.platform.openapi import error_responses
from service.platform.types import Storable
from service.tasks.resources import AppResources
from service.tasks.tracking import accept_callback, check_callback_token, says_finished
from service.web import read_callback_body

router = APIRouter(tags=["internal"])


@router.post(
    "/internal/qingbo/callback/{task_id}",
    summary="Qingbo callback",
    responses=error_responses(InvalidRequest, NotFound, PayloadTooLarge, RequestTimeout),
)
async def qingbo_callback(
    task_id: Annotated[str, Path(max_length=100), Storable],
    request: Request,
    res: AppResources,
    token: Annotated[str, Query(max_length=200), Storable] = "",
) -> Any:
    """Receives Qingbo's task callbacks; the task is re-read from Qingbo. The body is not
    trusted: its status only says how soon. It is read (a few KiB at most, within the body
    deadline) only after the token is checked, and with no connection held meanwhile."""
    async with res.pool.acquire() as conn:
        await check_callback_token(conn, task_id=task_id, token=token)
    finished = says_finished(await read_callback_body(request))
    async with res.pool.acquire() as conn:
        await accept_callback(conn, res.redis, res.settings, task_id=task_id, finished=finished)
    return {"ok": True}
