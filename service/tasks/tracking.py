"""Tracking: reading submitted tasks back from Qingbo (on its callback, or on the adaptive
poll schedule) until they end, and recording what it says (settlement.py finishes them).
No connection is held across a Qingbo call."""

from __future__ import annotations

import hmac
import logging
import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from service.catalog.statuses import TERMINAL_STATUSES
from service.config import Settings
from service.platform.errors import NotFound
from service.platform.metrics import (
    CALLBACKS_RECEIVED,
    TASKS_UNRECORDABLE,
    UPSTREAM_LATE_ANSWERS,
    UPSTREAM_READ_RETRIES,
    UPSTREAM_TRANSIENT_NOT_FOUND,
)
from service.tasks import announce, repository
from service.tasks.reads import hand_over, watched_tasks
from service.tasks.resources import Resources
from service.tasks.settlement import fail_task, finish
from service.tasks.states import DispatchState, TaskStatus
from service.tasks.submission import hash_token
from service.upstream.client import QingboClient
from service.upstream.errors import UpstreamError, UpstreamRejected, UpstreamRetryable
from service.upstream.parse import (
    UNKNOWN_STATUS,
    UpstreamView,
    parse_status,
    parse_upstream_task,
    report_oddities,
)

logger = logging.getLogger(__name__)

# A 404 this soon after Qingbo accepted a task may be its store catching up (a read served
# by a replica that has not seen the write yet): the task is read again, not failed.
NOT_FOUND_GRACE_SECONDS = 60.0


def next_poll_delay(settings: Settings, unchanged_polls: int) -> float:
    ceiling = (
        settings.poll_max_seconds_with_callbacks
        if settings.callbacks_enabled
        else settings.poll_max_seconds
    )
    delay = settings.first_poll_seconds * settings.poll_backoff_factor**unchanged_polls
    return min(ceiling, delay) * random.uniform(0.9, 1.1)


def read_retry_delay(settings: Settings, failures: int, retry_after: float | None) -> float:
    """When to read again after `failures` failed reads in a row: from
    QGW_POLL_RETRY_BASE_SECONDS doubling to QGW_POLL_RETRY_MAX_SECONDS, jittered over the
    upper half so a storm's failures spread out instead of coming back together; Qingbo's
    Retry-After wins when longer, up to QGW_POLL_RETRY_AFTER_MAX_SECONDS."""
    ceiling = min(
        settings.poll_retry_max_seconds,
        settings.poll_retry_base_seconds * 2 ** max(0, failures - 1),
    )
    delay: float = ceiling * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.poll_retry_after_max_seconds))
    return delay


async def refresh_from_upstream(
    pool: asyncpg.Pool, qingbo: QingboClient, settings: Settings, task_id: str
) -> str:
    """Re-read one submitted task from Qingbo and record what it says. No connection is
    held across the call: a slow Qingbo must not drain the pool for everyone else."""
    async with pool.acquire() as conn:
        row = await repository.get_task(conn, task_id)
    if row is None or row["dispatch_state"] != DispatchState.SUBMITTED:
        return "not_tracked"
    answered = False  # Qingbo answered 2xx: what failed is the answer, not the read
    try:
        answer = await qingbo.get_task(row["upstream_task_id"])
        answered = True
        view = parse_upstream_task(answer)
        report_oddities(view, operation="status", task_id=task_id)
        if view.status == UNKNOWN_STATUS:
            raise UpstreamRetryable("Qingbo answered a status the gateway does not know")
    except UpstreamRejected as exc:
        async with pool.acquire() as conn:
            return await _rejected_read(conn, settings, row, exc)
    except UpstreamError as exc:
        # Failing reads (5xx, timeouts, 429, unparseable answers) do not stop the clock.
        async with pool.acquire() as conn:
            if past_tracking_deadline(settings, row):
                return await time_out(conn, task_id, last_read=exc.message)
            if isinstance(exc, UpstreamRetryable) and not answered:
                # 429, 5xx, no answer: read again soon, not at the next poll minutes away.
                delay = read_retry_delay(settings, row["read_failures"] + 1, exc.retry_after)
                await repository.retry_read(conn, task_id, delay_seconds=delay)
                UPSTREAM_READ_RETRIES.labels(
                    f"http_{exc.status}" if exc.status else "no_answer"
                ).inc()
            else:
                await repository.poll_later(
                    conn, task_id, delay_seconds=next_poll_delay(settings, row["poll_count"] + 1)
                )
        return "upstream_error"
    async with pool.acquire() as conn:
        try:
            return await _record_read(conn, settings, row, view)
        except UNRECORDABLE as exc:
            return await unrecordable(conn, settings, row, exc)


async def _rejected_read(
    conn: asyncpg.Connection, settings: Settings, row: Any, exc: UpstreamRejected
) -> str:
    """Qingbo says the task is not there (404) or refuses the read. Just after it accepted
    the task, a 404 may be its store catching up: read again before believing it."""
    task_id = row["id"]
    young = (datetime.now(UTC) - row["submitted_at"]).total_seconds() < NOT_FOUND_GRACE_SECONDS
    if exc.status == 404 and young:
        UPSTREAM_TRANSIENT_NOT_FOUND.inc()
        await repository.poll_later(conn, task_id, delay_seconds=settings.poll_initial_seconds)
        return "not_found_yet"
    await _fail_tracked(
        conn, task_id, message=f"Qingbo: {exc.message}", code=exc.code or "upstream_not_found"
    )
    return "failed"


async def _record_read(
    conn: asyncpg.Connection, settings: Settings, row: Any, view: UpstreamView
) -> str:
    task_id = row["id"]
    if view.status in TERMINAL_STATUSES:
        async with conn.transaction():
            await finish(
                conn,
                task_id,
                status=TaskStatus(view.status),
                from_states=(DispatchState.SUBMITTED,),
                result=view.result,
                error=view.error if view.status == TaskStatus.FAILED else None,
                start_time=view.start_time,
                completed_at=view.completed_at,
                upstream=view,
                archive=settings.archive_url is not None,
                charge_cap=settings.charge_cap_ratio,
            )
        return view.status

    if past_tracking_deadline(settings, row):
        return await time_out(conn, task_id, last_read=f"still {view.status}")
    changed = view.status != row["status"] or view.progress != row["progress"]
    # Only a new status starts the poll schedule again. Progress moves on almost every
    # read of a running task: restarting on it kept every task at the first interval
    # (bench/inflight.py counted more reads per task than the schedule allows).
    new_status = view.status != row["status"]
    async with conn.transaction():
        await repository.record_progress(
            conn,
            task_id,
            status=view.status,
            progress=view.progress,
            start_time=view.start_time,
            next_poll_in=next_poll_delay(settings, 0 if new_status else row["poll_count"] + 1),
            reset_backoff=new_status,
        )
        if changed:
            logger.info(
                "task progress",
                extra={"task_id": task_id, "status": view.status, "progress": view.progress},
            )
        if changed and view.status == TaskStatus.PROCESSING:
            await announce.progress_event(
                conn, task_id, interval_seconds=settings.webhook_progress_interval_seconds
            )
    return view.status


def past_tracking_deadline(settings: Settings, row: Any) -> bool:
    tracked_for: float = (datetime.now(UTC) - row["submitted_at"]).total_seconds()
    return tracked_for > settings.task_max_tracking_seconds


async def _fail_tracked(conn: asyncpg.Connection, task_id: str, *, message: str, code: str) -> None:
    async with conn.transaction():
        await fail_task(
            conn, task_id, from_states=(DispatchState.SUBMITTED,), message=message, code=code
        )


# What Postgres (or its driver) says when it cannot store an answer: bad text, a number
# out of range, a constraint. Not a lost connection: an outage must not fail tasks.
UNRECORDABLE = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    ValueError,
    TypeError,
    OverflowError,
)


async def unrecordable(
    conn: asyncpg.Connection, settings: Settings, row: Any, exc: Exception
) -> str:
    """Qingbo answered, and the answer could not be recorded (sanitize.py should have made
    that impossible: this is the backstop). Read again later, up to
    QGW_UPSTREAM_ANSWER_MAX_RECORD_TRIES reads or the tracking deadline; then the task
    fails `upstream_answer_unrecordable`, releasing its reservation and slots."""
    task_id = row["id"]
    tries = await repository.count_record_failure(conn, task_id)
    logger.error(
        "Qingbo's answer could not be recorded",
        extra={"task_id": task_id, "error": type(exc).__name__, "tries": tries},
    )
    if tries < settings.upstream_answer_max_record_tries and not past_tracking_deadline(
        settings, row
    ):
        await repository.poll_later(
            conn, task_id, delay_seconds=next_poll_delay(settings, row["poll_count"] + 1)
        )
        return "unrecordable"
    await _fail_tracked(
        conn,
        task_id,
        message=f"Qingbo's answer could not be recorded ({tries} reads)",
        code="upstream_answer_unrecordable",
    )
    TASKS_UNRECORDABLE.labels(row["model"]).inc()
    return "failed"


async def time_out(conn: asyncpg.Connection, task_id: str, *, last_read: str) -> str:
    """Give up on a task Qingbo did not finish within QGW_TASK_MAX_TRACKING_SECONDS: it
    fails, and its reservation, concurrency and in-flight slots are released."""
    await _fail_tracked(
        conn,
        task_id,
        message=f"Qingbo did not finish the task in time (last read: {last_read})",
        code="upstream_timeout",
    )
    logger.warning("task timed out at Qingbo", extra={"task_id": task_id, "last_read": last_read})
    return "timed_out"


async def hand_over_due_polls(res: Resources) -> int:
    """Hand the due polls to the read lane, the watched tasks' first brought forward to
    QGW_POLL_WATCHED_SECONDS (tasks/watching.py): a cost that follows the watched alone."""
    try:
        watched = await watched_tasks(res.redis, res.settings.arq_queue_name)
    except (RedisError, OSError) as exc:
        logger.warning("watched tasks unknown", extra={"error": type(exc).__name__})
        watched = []
    async with res.pool.acquire() as conn:
        if watched:
            await repository.pull_watched_polls(
                conn, watched, within_seconds=res.settings.poll_watched_seconds
            )
        due = await repository.claim_due_polls(
            conn, limit=500, lease_seconds=res.settings.poll_lease_seconds
        )
    await hand_over(res.redis, res.settings.arq_queue_name, [row["id"] for row in due])
    return len(due)


def says_finished(body: bytes) -> bool:
    """Whether a callback's body says the task ended: only a hint for how soon to read it
    (the read decides), so a body that is not a task's JSON just says no."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(answer, dict) and parse_status(answer.get("status")) in TERMINAL_STATUSES


async def check_callback_token(conn: asyncpg.Connection, *, task_id: str, token: str) -> None:
    """404 unless `token` is the task's callback token: checked before the callback's body
    is read (a stranger's body is never read), with a connection given back before it."""
    expected = await repository.callback_token_hash(conn, task_id)
    if expected is None or not hmac.compare_digest(bytes(expected), hash_token(token)):
        CALLBACKS_RECEIVED.labels("rejected").inc()
        # Same answer for unknown task and wrong token: nothing to probe.
        raise NotFound("no such callback")


async def accept_callback(
    conn: asyncpg.Connection,
    redis: ArqRedis,
    settings: Settings,
    *,
    task_id: str,
    finished: bool = False,
) -> None:
    """Qingbo called back for the task (its token checked: check_callback_token): read the
    task again now (the callback's body is not trusted; the read is). The read takes the
    poll's lease, so the poller does not read it a second time (bench/inflight.py counted
    two reads per callback without it).

    A callback that says the task `finished` is read before the other reads waiting (the
    read lane's ends list): with 10,000 tasks in flight hundreds of polls and "processing"
    re-reads wait, and an end read behind them was seen seconds late (bench/inflight.py)."""
    ended_with = await repository.lease_poll(
        conn, task_id, lease_seconds=settings.poll_lease_seconds
    )
    if ended_with == "upstream_timeout":
        # Qingbo answers for a task the gateway gave up on: count it, the task stays failed.
        UPSTREAM_LATE_ANSWERS.inc()
        logger.warning("late answer from Qingbo", extra={"task_id": task_id})
    await hand_over(redis, settings.arq_queue_name, [task_id], ended=finished)
    CALLBACKS_RECEIVED.labels("accepted").inc()
