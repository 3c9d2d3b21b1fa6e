"""Driving admitted tasks through Qingbo: dispatch, submit, track, finish, reconcile.

Postgres is the source of truth. Every step is a conditional update on the task's
`dispatch_state`, so a job that runs twice (arq is at-least-once) changes nothing the
second time, and a job that vanished is re-driven from the rows by the crons.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service.budgets import repository as budgets
from service.catalog.generations import generation
from service.catalog.models import (
    MICROS_PER_USD,
    STATUSES,
    TERMINAL_STATUSES,
    format_usd,
    quota_to_micros,
)
from service.catalog.rules import upstream_body
from service.config import Settings
from service.deps import Resources
from service.errors import InvalidRequest
from service.metrics import (
    COST_CHARGED,
    COST_DRIFT,
    DISPATCH_CLAIMED,
    RECONCILER_REPAIRS,
    TASK_END_TO_END,
    TASK_QUEUE_WAIT,
    TASK_UPSTREAM_RUN,
    TASKS_TERMINAL,
    UPSTREAM_AMBIGUOUS,
    UPSTREAM_PAUSES,
    UPSTREAM_SUBMIT_RETRIES,
)
from service.tasks import repository
from service.tasks.queue import enqueue_refresh, enqueue_submit, kick_dispatch
from service.upstream.client import QingboClient
from service.upstream.errors import (
    UpstreamAccountBlocked,
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamRejected,
    UpstreamRetryable,
)
from service.upstream.parse import UpstreamView, parse_upstream_task
from service.webhooks import outbox

logger = logging.getLogger(__name__)

# Qingbo remembers an Idempotency-Key for 24 h (task/submit.mdx); an hour's margin.
UPSTREAM_KEY_WINDOW = timedelta(hours=23)

AMBIGUOUS_MESSAGE = (
    "the submission to Qingbo got no answer after it was sent, so it may or may not have "
    "been created there; the gateway did not resend it to avoid a second paid task. "
    "Submit again if you still need the video."
)


async def finish(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    status: str,
    from_states: tuple[str, ...],
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    start_time: datetime | None = None,
    completed_at: datetime | None = None,
    upstream: UpstreamView | None = None,
) -> asyncpg.Record | None:
    """The one way into a terminal status (inside the caller's transaction); once per task.

    The budget settles and the webhook event is written in the same transaction: completed
    turns the task's reservations into spend at what Qingbo charged (its reported `cost`,
    where it reports one; else the estimate), anything else releases them, so no crash can
    leave one without the other or lose the event.
    """
    reported = upstream.cost_quota if upstream is not None else None
    row = await repository.finish_task(
        conn,
        task_id,
        status=status,
        from_states=from_states,
        result=result,
        error=error,
        start_time=start_time,
        completed_at=completed_at,
        reported_cost_micros=quota_to_micros(reported) if reported is not None else None,
        billing_status=upstream.billing_status if upstream is not None else None,
    )
    if row is not None:
        completed = status == "completed"
        await budgets.settle_task(
            conn,
            task_id=task_id,
            completed=completed,
            charged_micros=row["charged_micros"] if completed else None,
        )
        await outbox.task_event(conn, row, status)
        if completed:
            COST_CHARGED.labels(row["team_name"], row["model"]).inc(
                row["charged_micros"] / MICROS_PER_USD
            )
            _count_drift(row)
        TASKS_TERMINAL.labels(row["team_name"], row["model"], status).inc()
        ended = (
            row["completed_at"] if row["completed_at"] > row["created_at"] else datetime.now(UTC)
        )
        TASK_END_TO_END.labels(row["model"], status).observe(
            (ended - row["created_at"]).total_seconds()
        )
        if row["submitted_at"] is not None:
            TASK_UPSTREAM_RUN.labels(row["model"], status).observe(
                max(0.0, (ended - row["submitted_at"]).total_seconds())
            )
        logger.info("task finished", extra={"task_id": task_id, "status": status})
    return row


def _count_drift(row: Any) -> None:
    """Qingbo charged other than the price table's estimate: count and log it (the budget
    has already settled at the charge)."""
    drift = row["charged_micros"] - row["cost_micros"]
    if drift == 0:
        return
    direction = "over" if drift > 0 else "under"
    COST_DRIFT.labels(row["model"], direction).inc(abs(drift) / MICROS_PER_USD)
    logger.warning(
        "Qingbo charged other than the estimate",
        extra={
            "task_id": row["id"],
            "model": row["model"],
            "estimated_usd": format_usd(row["cost_micros"]),
            "charged_usd": format_usd(row["charged_micros"]),
        },
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


# --- dispatch -----------------------------------------------------------------------


async def dispatch_pending(res: Resources) -> int:
    """Claim what the in-flight and submissions-per-second caps allow, fairly across teams,
    and enqueue their submits."""
    async with res.pool.acquire() as conn, conn.transaction():
        paused_until = await repository.upstream_paused_until(conn)
        if paused_until is not None:
            return 0
        claimed = await repository.claim_pending(
            conn,
            limit=res.settings.dispatch_batch_size,
            max_in_flight=res.settings.upstream_max_in_flight,
            submits_per_second=res.settings.upstream_max_submits_per_second,
            submit_burst=res.settings.upstream_submit_burst,
        )
    for row in claimed:
        await enqueue_submit(
            res.redis, res.settings.arq_queue_name, row["id"], row["dispatch_attempts"]
        )
    DISPATCH_CLAIMED.inc(len(claimed))
    return len(claimed)


# --- submit -------------------------------------------------------------------------


def callback_url_for(settings: Settings, task_id: str, token: str) -> str:
    base = (settings.public_base_url or "").rstrip("/")
    return f"{base}/internal/qingbo/callback/{task_id}?token={token}"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def idempotency_key_for(task_id: str) -> str:
    """The upstream Idempotency-Key of a task: the same on every attempt, so a repeat after
    an unknown outcome is the task Qingbo created first, billed once."""
    return f"qgw-{task_id}"


async def submit(res: Resources, task_id: str, attempt: int) -> str:
    """Submit one claimed task to Qingbo; returns what happened (for logs and tests)."""
    settings = res.settings
    gen = settings.generation
    token = secrets.token_urlsafe(32) if settings.callbacks_enabled else None
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
                and state["dispatch_state"] == "submitting"
                and state["dispatch_attempts"] == attempt
            ):
                # This job ran before and died inside the call: the outcome is unknown.
                return await resolve_ambiguous(res, conn, dict(state) | {"id": task_id})
            return "skipped"
        try:
            # Made for the generation the upstream speaks now (it may have changed since
            # the task was admitted).
            body = upstream_body(row["request"], gen)
        except InvalidRequest as exc:
            async with conn.transaction():
                await finish(
                    conn,
                    task_id,
                    status="failed",
                    from_states=("submitting",),
                    error={"message": exc.message, "code": "invalid_request"},
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
        view = parse_upstream_task({**answer, "status": answer.get("status", "queued")})
    except UpstreamError as exc:
        async with res.pool.acquire() as conn:
            return await _submit_failed(res, conn, task_id, attempt, exc)

    async with res.pool.acquire() as conn:
        recorded = await repository.record_submitted(
            conn,
            task_id,
            attempt=attempt,
            upstream_task_id=upstream_id,
            status="processing" if view.status == "processing" else "queued",
            progress=view.progress,
            next_poll_in=settings.poll_initial_seconds,
            pre_consumed_quota=view.pre_consumed_quota,
        )
    if recorded is None:
        logger.error("submitted task changed state meanwhile", extra={"task_id": task_id})
        return "lost_race"
    TASK_QUEUE_WAIT.labels(recorded["model"]).observe(float(recorded["queue_wait"]))
    logger.info("task submitted", extra={"task_id": task_id, "upstream_task_id": upstream_id})
    return "submitted"


async def _submit_failed(
    res: Resources, conn: asyncpg.Connection, task_id: str, attempt: int, exc: UpstreamError
) -> str:
    settings = res.settings
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
                from_state="submitting",
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
    if isinstance(exc, UpstreamRetryable) and attempt < settings.upstream_max_submit_attempts:
        delay = backoff_seconds(settings, attempt, exc.retry_after)
        async with conn.transaction():
            await repository.return_to_pending(
                conn, task_id, from_state="submitting", attempt=attempt, delay_seconds=delay
            )
        UPSTREAM_SUBMIT_RETRIES.labels(f"http_{exc.status}" if exc.status else "unreachable").inc()
        await kick_dispatch(res.redis, settings.arq_queue_name)
        return "retry"
    if isinstance(exc, UpstreamRejected):
        error = {"message": exc.message, "code": exc.code or "upstream_rejected"}
    else:
        error = {
            "message": f"Qingbo unavailable after {attempt} attempts: {exc.message}",
            "code": "upstream_unavailable",
        }
    async with conn.transaction():
        await finish(conn, task_id, status="failed", from_states=("submitting",), error=error)
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
    once. Otherwise the configured, documented policy decides."""
    task_id, attempt = task["id"], task["dispatch_attempts"]
    settings = res.settings
    if idempotent_resubmit(settings, task):
        policy = "idempotent_resubmit"
    else:
        policy = settings.ambiguous_submit_policy
    UPSTREAM_AMBIGUOUS.labels(policy).inc()
    logger.warning("ambiguous submission", extra={"task_id": task_id, "policy": policy})
    async with conn.transaction():
        if policy == "idempotent_resubmit" and attempt < settings.upstream_max_submit_attempts:
            await repository.return_to_pending(
                conn,
                task_id,
                from_state="submitting",
                attempt=attempt,
                delay_seconds=backoff_seconds(settings, attempt),
            )
        elif policy == "resubmit":
            await repository.return_to_pending(
                conn, task_id, from_state="submitting", attempt=attempt, delay_seconds=0
            )
        else:
            await finish(
                conn,
                task_id,
                status="failed",
                from_states=("submitting",),
                error={"message": AMBIGUOUS_MESSAGE, "code": "upstream_ambiguous"},
            )
    await kick_dispatch(res.redis, settings.arq_queue_name)
    return f"ambiguous_{policy}"


# --- tracking -----------------------------------------------------------------------


def next_poll_delay(settings: Settings, unchanged_polls: int) -> float:
    ceiling = (
        settings.poll_max_seconds_with_callbacks
        if settings.callbacks_enabled
        else settings.poll_max_seconds
    )
    delay = settings.poll_initial_seconds * settings.poll_backoff_factor**unchanged_polls
    return min(ceiling, delay) * random.uniform(0.9, 1.1)


async def refresh_from_upstream(
    conn: asyncpg.Connection, qingbo: QingboClient, settings: Settings, task_id: str
) -> str:
    """Re-read one submitted task from Qingbo and record what it says."""
    row = await repository.get_task(conn, task_id)
    if row is None or row["dispatch_state"] != "submitted":
        return "not_tracked"
    try:
        view = parse_upstream_task(await qingbo.get_task(row["upstream_task_id"]))
    except UpstreamRejected as exc:
        async with conn.transaction():
            await finish(
                conn,
                task_id,
                status="failed",
                from_states=("submitted",),
                error={
                    "message": f"Qingbo: {exc.message}",
                    "code": exc.code or "upstream_not_found",
                },
            )
        return "failed"
    except UpstreamError:
        await repository.poll_later(
            conn, task_id, delay_seconds=next_poll_delay(settings, row["poll_count"] + 1)
        )
        return "upstream_error"

    if view.status in TERMINAL_STATUSES:
        async with conn.transaction():
            await finish(
                conn,
                task_id,
                status=view.status,
                from_states=("submitted",),
                result=view.result,
                error=view.error if view.status == "failed" else None,
                start_time=view.start_time,
                completed_at=view.completed_at,
                upstream=view,
            )
        return view.status

    tracked_for = (datetime.now(UTC) - row["submitted_at"]).total_seconds()
    if tracked_for > settings.task_max_tracking_seconds:
        async with conn.transaction():
            await finish(
                conn,
                task_id,
                status="failed",
                from_states=("submitted",),
                error={
                    "message": "Qingbo did not finish the task in time",
                    "code": "upstream_timeout",
                },
            )
        return "timed_out"
    changed = view.status != row["status"] or view.progress != row["progress"]
    async with conn.transaction():
        await repository.record_progress(
            conn,
            task_id,
            status=view.status,
            progress=view.progress,
            start_time=view.start_time,
            next_poll_in=next_poll_delay(settings, 0 if changed else row["poll_count"] + 1),
            changed=changed,
        )
        if changed and view.status == "processing":
            await outbox.progress_event(
                conn, task_id, interval_seconds=settings.webhook_progress_interval_seconds
            )
    return view.status


async def enqueue_due_polls(res: Resources) -> int:
    async with res.pool.acquire() as conn:
        due = await repository.claim_due_polls(
            conn, limit=500, lease_seconds=res.settings.poll_lease_seconds
        )
    for row in due:
        await enqueue_refresh(
            res.redis, res.settings.arq_queue_name, row["id"], poll_count=row["poll_count"]
        )
    return len(due)


# --- reconciler ---------------------------------------------------------------------


async def reconcile(res: Resources) -> dict[str, int]:
    """Re-drive work whose job vanished (Redis flushed, worker killed)."""
    settings = res.settings
    repairs = {"stale_claim": 0, "stale_submit": 0}
    async with res.pool.acquire() as conn:
        requeued = await repository.requeue_stale_claims(
            conn, lease_seconds=settings.claim_lease_seconds
        )
        repairs["stale_claim"] = len(requeued)
        for row in await repository.stale_submissions(
            conn, lease_seconds=settings.submit_lease_seconds
        ):
            await resolve_ambiguous(res, conn, row)
            repairs["stale_submit"] += 1
    for kind, count in repairs.items():
        if count:
            RECONCILER_REPAIRS.labels(kind).inc(count)
            logger.warning("reconciler repaired tasks", extra={"kind": kind, "count": count})
    await dispatch_pending(res)
    return repairs
