"""Enqueueing the arq jobs that move tasks: Redis only schedules, Postgres decides."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq.connections import ArqRedis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

DISPATCH_JOB = "dispatch_pending_tasks"
# Named after its function (jobs.send_to_qingbo), not the HTTP route submit_task. Until
# the rename it was "submit_task": during a rolling deploy a worker drops a job of the
# other release's name ("function not found"), and nothing is lost: the task stays
# claimed, the reconciler puts it back to pending once QGW_CLAIM_LEASE_SECONDS pass
# (repository.requeue_stale_claims) and dispatch enqueues it again under this name. Only
# workers enqueue submits (dispatch runs there), so no alias under the old name is kept.
SUBMIT_JOB = "send_to_qingbo"


async def kick_dispatch(redis: ArqRedis, queue: str) -> None:
    """Ask a worker to dispatch now; if Redis is down the dispatch cron still finds the task."""
    try:
        await redis.enqueue_job(DISPATCH_JOB, _queue_name=queue)
    except (RedisError, OSError) as exc:
        logger.warning("dispatch kick not enqueued", extra={"error": type(exc).__name__})


async def enqueue_submit(redis: ArqRedis, queue: str, task_id: str, attempt: int) -> None:
    # One job id per attempt: a re-claimed task never collides with its previous job.
    await redis.enqueue_job(
        SUBMIT_JOB, task_id, attempt, _job_id=f"submit:{task_id}:{attempt}", _queue_name=queue
    )


class DispatchKicker:
    """Coalesces "dispatch now" requests from API handlers into one arq job per burst.

    The enqueue runs beside the request, not inside it: an admitted task is already safe
    in Postgres, and if this process dies before kicking, the dispatch cron finds it.
    """

    def __init__(self, redis: ArqRedis, queue: str, *, min_interval: float = 0.05) -> None:
        self._redis = redis
        self._queue = queue
        # At most one enqueue per interval: a kick is only "dispatch soon", and arq's
        # enqueue costs several Redis round trips of this process's CPU.
        self._min_interval = min_interval
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatch-kicker")

    def kick(self) -> None:
        self._wanted.set()

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await kick_dispatch(self._redis, self._queue)
            await asyncio.sleep(self._min_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._wanted.is_set():
            await kick_dispatch(self._redis, self._queue)
