"""Submitting a claimed task to Qingbo, once: the intent recorded before the call, the
answer after it, and what an error or an unknown outcome means for the task.

Every step is a conditional update on the task's `dispatch_state` and attempt, so a job
that arq runs twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from service.catalog.generations import generation
from service.catalog.intake import build_upstream
from service.catalog.statuses import STATUSES
from service.config import Settings
from service.platform.db import DATABASE_UNAVAILABLE
from service.platform.errors import InvalidRequest
from service.platform.metrics import (
    DATABASE_RETRIES,
    TASK_QUEUE_WAIT,
    UPSTREAM_AMBIGUOUS,
    UPSTREAM_AMBIGUOUS_RESENDS,
    UPSTREAM_PAUSES,
    UPSTREAM_SUBMIT_RETRIES,
)
from service.tasks import repository
from service.tasks.media import join_media
from service.tasks.queue import kick_dispatch
from service.tasks.resources import Resources
from service.tasks.settlement import fail_task
from service.tasks.states import DispatchState, TaskStatus
from service.upstream.errors import (
    UpstreamAccountBlocked,
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamRejected,
    UpstreamRetryable,
)
from service.upstream.parse import parse_upstream_task, report_oddities

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Qingbo remembers an Idempotency-Key for 24 h (task/submit.mdx); an hour's margin.
UPSTREAM_KEY_WINDOW = timedelta(hours=23)

AMBIGUOUS_MESSAGE = (
    "the submission to Qingbo got no answer after it was sent, so it may or may not have "
    "been created there; the gateway did not resend it to avoid a second paid task. "
    "Submit again if you still need the video."
)
UNRESOLVED_MESSAGE = (
    "every submission to Qingbo went unanswered after it was sent, until the gateway's "
    "retry bound; Qingbo may or may not have created the task. Submit again if you still "
    "need the video."
)


def backoff_seconds(settings: Settings, attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; Qingbo's Retry-After wins when it asks for longer."""
    ceiling = min(
        settings.upstream_retry_max_seconds,
        settings.upstream_retry_base_seconds * 2 ** max(0, attempt - 1),
    )
    delay: float = ceiling * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.upstream_retry_max_seconds))
    return delay


def callback_url_for(settings: Settings, task_id: str, token: str) -> str:
    base = (settings.public_base_url or "").rstrip("/")
    return f"{base}/internal/qingbo/callback/{task_id}?token={token}"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def callback_token_for(settings: Settings, task_id: str) -> str:
    """The task's callback token: the same on every attempt, because a resend that Qingbo
    answers with the task it made first calls back with the first attempt's URL. Keyed by
    the company's Qingbo key (only Qingbo and the gateway know it), so no one can make a
    task's token from its id."""
    secret = settings.qingbo_api_key.get_secret_value().encode()
    mac = hmac.new(secret, b"qgw-callback:" + task_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def idempotency_key_for(task_id: str) -> str:
    """The upstream Idempotency-Key of a task: the same on every attempt, so a repeat after
    an unknown outcome is the task Qingbo created first, billed once."""
    return f"qgw-{task_id}"


async def submit(res: Resources, task_id: str, attempt: int) -> str:
    """Submit one claimed task to Qingbo; returns what happened (for logs and tests)."""
    settings = res.settings
    gen = settings.generation
    token = callback_token_for(settings, task_id) if settings.callbacks_enabled else None
    async with res.pool.acquire() as conn:
        async with conn.transaction():
            row = await repository.start_submit(
                conn,
                task_id,
                attempt=attempt,
                callback_token_hash=hash_token(token) if token else None,
                api_version=gen.version,
            )
        if row is None:
            state = await repository.dispatch_state(conn, task_id)
            if (
                state
                and state["dispatch_state"] == DispatchState.SUBMITTING
                and state["dispatch_attempts"] == attempt
            ):
                # This job ran before and died inside the call: the outcome is unknown.
                return await resolve_ambiguous(res, conn, dict(state) | {"id": task_id})
            return "skipped"
        try:
            # Made for the generation the upstream speaks now (it may have changed since
            # the task was admitted).
            request = join_media(row["request"], row["media"])
            ref = request.get("ref_task_id")
            # A chained action's source is the team's own completed task (checked at
            # admission): Qingbo is sent its own id for it.
            source = (
                await repository.get_task(conn, str(ref), team_id=row["team_id"]) if ref else None
            )
            body = build_upstream(
                request, gen, ref_upstream_id=source["upstream_task_id"] if source else None
            )
        except InvalidRequest as exc:
            async with conn.transaction():
                await fail_task(
                    conn,
                    task_id,
                    from_states=(DispatchState.SUBMITTING,),
                    message=exc.message,
                    code="invalid_request",
                )
            return "failed"

    if token:
        body["callback_url"] = callback_url_for(settings, task_id, token)
        body["callback_events"] = list(STATUSES)
    key = idempotency_key_for(task_id) if gen.idempotency_keys else None
    try:
        answer = await res.qingbo.create_task(body, idempotency_key=key)
        upstream_id = answer.get("task_id")
        if not isinstance(upstream_id, str) or not upstream_id:
            raise UpstreamAmbiguous("Qingbo answered without a task_id")
    except UpstreamError as exc:
        async with res.pool.acquire() as conn:
            return await _submit_failed(res, conn, row, exc)

    # A task id means Qingbo made the task: whatever else the answer says, it is recorded
    # as submitted and tracked, never sent again.
    view = parse_upstream_task({**answer, "status": answer.get("status", TaskStatus.QUEUED)})
    report_oddities(view, operation="submit", task_id=task_id)

    async def record() -> asyncpg.Record | None:
        async with res.pool.acquire() as conn:
            return await repository.record_submitted(
                conn,
                task_id,
                attempt=attempt,
                upstream_task_id=upstream_id,
                status=(
                    TaskStatus.PROCESSING
                    if view.status == TaskStatus.PROCESSING
                    else TaskStatus.QUEUED
                ),
                progress=view.progress,
                next_poll_in=settings.first_poll_seconds,
                pre_consumed_quota=view.pre_consumed_quota,
            )

    recorded = await keep_trying(record, task_id=task_id, seconds=settings.submit_lease_seconds)
    if recorded is None:
        logger.error("submitted task changed state meanwhile", extra={"task_id": task_id})
        return "lost_race"
    TASK_QUEUE_WAIT.labels(recorded["model"]).observe(float(recorded["queue_wait"]))
    logger.info("task submitted", extra={"task_id": task_id, "upstream_task_id": upstream_id})
    return "submitted"


def within_retry_deadline(settings: Settings, first_sent_at: datetime | None) -> bool:
    """Whether a task may still be retried: QGW_UPSTREAM_RETRY_DEADLINE_SECONDS from its
    first send. Its wait in the gateway's own queue does not count, or a backlog would turn
    one 429 into a failure."""
    if first_sent_at is None:
        return True
    elapsed = (datetime.now(UTC) - first_sent_at).total_seconds()
    return elapsed < settings.upstream_retry_deadline_seconds


async def keep_trying(write: Callable[[], Awaitable[T]], *, task_id: str, seconds: float) -> T:
    """Qingbo's answer is never thrown away: a write of it that meets an unavailable
    database is tried again, with backoff, for up to `seconds` (the submit lease, after
    which the reconciler settles the task with the upstream Idempotency-Key)."""
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        try:
            return await write()
        except DATABASE_UNAVAILABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            DATABASE_RETRIES.inc()
            logger.warning(
                "database unavailable: recording Qingbo's answer again shortly",
                extra={"task_id": task_id, "error": type(exc).__name__},
            )
            await asyncio.sleep(delay)  # backoff while the database comes back
            delay = min(1.0, delay * 2)


async def _submit_failed(
    res: Resources, conn: asyncpg.Connection, task: Any, exc: UpstreamError
) -> str:
    settings = res.settings
    task_id, attempt = task["id"], task["dispatch_attempts"]
    if isinstance(exc, UpstreamAmbiguous):
        state = await repository.dispatch_state(conn, task_id)
        if state is None:
            return "skipped"
        return await resolve_ambiguous(res, conn, dict(state) | {"id": task_id})
    if isinstance(exc, UpstreamAccountBlocked):
        reason = "balance_exhausted" if exc.status == 402 else "unauthorized"
        async with conn.transaction():
            await repository.pause_upstream(
                conn, seconds=settings.upstream_pause_seconds, reason=reason
            )
            await repository.return_to_pending(
                conn,
                task_id,
                from_state=DispatchState.SUBMITTING,
                attempt=attempt,
                delay_seconds=0,
                refund_attempt=True,
            )
        UPSTREAM_PAUSES.labels(reason).inc()
        logger.error(
            "Qingbo refused the account: submissions paused",
            extra={
                "reason": reason,
                "status": exc.status,
                "pause_seconds": settings.upstream_pause_seconds,
            },
        )
        return "paused"
    # A 429 is "slow down", a 5xx or a connection failure "try later": never a failure
    # while the deadline holds.
    if isinstance(exc, UpstreamRetryable) and within_retry_deadline(
        settings, task["first_sent_at"]
    ):
        delay = backoff_seconds(settings, attempt, exc.retry_after)
        async with conn.transaction():
            await repository.return_to_pending(
                conn,
                task_id,
                from_state=DispatchState.SUBMITTING,
                attempt=attempt,
                delay_seconds=delay,
            )
        UPSTREAM_SUBMIT_RETRIES.labels(f"http_{exc.status}" if exc.status else "unreachable").inc()
        await kick_dispatch(res.redis, settings.arq_queue_name)
        return "retry"
    if isinstance(exc, UpstreamRejected):
        message, code = exc.message, exc.code or "upstream_rejected"
    else:
        message = (
            f"Qingbo unavailable for {settings.upstream_retry_deadline_seconds:g} s "
            f"({attempt} attempts): {exc.message}"
        )
        code = "upstream_unavailable"
    async with conn.transaction():
        await fail_task(
            conn, task_id, from_states=(DispatchState.SUBMITTING,), message=message, code=code
        )
    await kick_dispatch(res.redis, settings.arq_queue_name)
    return "failed"


def idempotent_resubmit(settings: Settings, task: Any) -> bool:
    """Whether an unknown outcome can be settled by sending again with the same key: the
    task went out to a generation that honours keys, and Qingbo still remembers its key
    (24 h from the first send; a margin keeps clear of the edge)."""
    version = task["upstream_api_version"]
    if version is None or not generation(version).idempotency_keys:
        return False
    sent = task["first_sent_at"]
    return sent is None or datetime.now(UTC) - sent < UPSTREAM_KEY_WINDOW


async def resolve_ambiguous(res: Resources, conn: asyncpg.Connection, task: Any) -> str:
    """A submission whose outcome is unknown (read timeout, reset, 504, a worker killed
    inside the call, an answer never recorded). Against 2026-09 it is sent again with the
    same Idempotency-Key: Qingbo answers with the task it made, if it made one, and bills
    once. Otherwise the configured, documented policy decides. Every policy is bounded:
    resends stop at the retry deadline, and blind ones (`resubmit`) after
    QGW_AMBIGUOUS_MAX_RESUBMITS."""
    task_id, attempt = task["id"], task["dispatch_attempts"]
    settings = res.settings
    if idempotent_resubmit(settings, task):
        policy = "idempotent_resubmit"
    else:
        policy = settings.ambiguous_submit_policy
    UPSTREAM_AMBIGUOUS.labels(policy).inc()
    resend = within_retry_deadline(settings, task["first_sent_at"]) and (
        policy == "idempotent_resubmit"
        or (policy == "resubmit" and task["ambiguous_resends"] < settings.ambiguous_max_resubmits)
    )
    logger.warning(
        "ambiguous submission",
        extra={"task_id": task_id, "policy": policy, "resend": resend},
    )
    async with conn.transaction():
        if resend:
            await repository.return_to_pending(
                conn,
                task_id,
                from_state=DispatchState.SUBMITTING,
                attempt=attempt,
                delay_seconds=backoff_seconds(settings, attempt),
                ambiguous_resend=True,
            )
        else:
            await fail_task(
                conn,
                task_id,
                from_states=(DispatchState.SUBMITTING,),
                message=AMBIGUOUS_MESSAGE if policy == "fail" else UNRESOLVED_MESSAGE,
                code="upstream_ambiguous",
            )
    if resend:
        UPSTREAM_AMBIGUOUS_RESENDS.labels(policy).inc()
    await kick_dispatch(res.redis, settings.arq_queue_name)
    return f"ambiguous_{policy}" if resend or policy == "fail" else "ambiguous_gave_up"
