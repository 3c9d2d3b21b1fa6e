"""Qingbo's callbacks: token-checked, body ignored; a callback only triggers a re-read."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from service.deps import AppResources
from service.errors import InvalidRequest, NotFound
from service.metrics import CALLBACKS_RECEIVED, UPSTREAM_LATE_ANSWERS
from service.openapi import error_responses
from service.tasks import repository
from service.tasks.queue import enqueue_refresh
from service.tasks.submission import hash_token
from service.types import Storable

logger = logging.getLogger(__name__)
router = APIRouter(tags=["internal"])


@router.post(
    "/internal/qingbo/callback/{task_id}",
    summary="Qingbo callback",
    responses=error_responses(InvalidRequest, NotFound),
)
async def qingbo_callback(
    task_id: Annotated[str, Path(max_length=100), Storable],
    res: AppResources,
    token: Annotated[str, Query(max_length=200), Storable] = "",
) -> Any:
    """Receives Qingbo's task callbacks; the task is re-read from Qingbo, the body is not used."""
    async with res.pool.acquire() as conn:
        expected = await repository.callback_token_hash(conn, task_id)
        if expected is None or not hmac.compare_digest(bytes(expected), hash_token(token)):
            CALLBACKS_RECEIVED.labels("rejected").inc()
            # Same answer for unknown task and wrong token: nothing to probe.
            raise NotFound("no such callback")
        ended_with = await repository.poll_now(conn, task_id)
    if ended_with == "upstream_timeout":
        # Qingbo answers for a task the gateway gave up on: count it, the task stays failed.
        UPSTREAM_LATE_ANSWERS.inc()
        logger.warning("late answer from Qingbo", extra={"task_id": task_id})
    await enqueue_refresh(res.redis, res.settings.arq_queue_name, task_id)
    CALLBACKS_RECEIVED.labels("accepted").inc()
    return {"ok": True}
