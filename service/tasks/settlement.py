"""The one way into a terminal status: the task, its budget settlement and its webhook
event change together, in the caller's transaction, once per task."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

from service.archive import repository as archives
from service.budgets import disputes
from service.budgets import repository as budgets
from service.platform.metrics import (
    COST_CHARGED,
    COST_DRIFT,
    TASK_END_TO_END,
    TASK_UPSTREAM_RUN,
    TASKS_TERMINAL,
)
from service.platform.money import MICROS_PER_USD, format_usd, quota_to_micros
from service.spend import repository as spend
from service.tasks import announce, repository
from service.tasks.states import DispatchState, TaskStatus
from service.upstream.parse import UpstreamView

logger = logging.getLogger(__name__)


async def finish(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    status: TaskStatus,
    from_states: tuple[DispatchState, ...],
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    start_time: datetime | None = None,
    completed_at: datetime | None = None,
    upstream: UpstreamView | None = None,
    archive: bool = False,
    charge_cap: tuple[int, int] | None = None,
) -> asyncpg.Record | None:
    """The one way into a terminal status (inside the caller's transaction); once per task.

    The budget settles and the webhook event is written in the same transaction: completed
    turns the task's reservations into spend at what Qingbo charged (its reported `cost`,
    where it reports one; else the estimate), anything else releases them, so no crash can
    leave one without the other or lose the event. With `archive`, a completed task's
    videos are queued for the archive in the same transaction. With `charge_cap`
    (QGW_CHARGE_CAP_FACTOR as a ratio) budgets are charged at most the reservation times
    it, and what Qingbo reported beyond that becomes a dispute (budgets/disputes.py).
    """
    reported = upstream.cost_quota if upstream is not None else None
    reported_micros = quota_to_micros(reported) if reported is not None else None
    row = await repository.finish_task(
        conn,
        task_id,
        status=status,
        from_states=from_states,
        result=result,
        error=error,
        start_time=start_time,
        completed_at=completed_at,
        reported_cost_micros=reported_micros,
        billing_status=upstream.billing_status if upstream is not None else None,
        charge_cap=charge_cap,
    )
    if row is not None:
        completed = status == TaskStatus.COMPLETED
        await budgets.settle_task(
            conn,
            task_id=task_id,
            completed=completed,
            charged_micros=row["charged_micros"] if completed else None,
        )
        await spend.record_charge(conn, row)
        if completed:
            await disputes.open_if_over_cap(conn, row, reported_micros=reported_micros)
        payload_row: Any = row
        if completed and archive and row["result"]:
            # The videos to keep, in this transaction: no crash or Redis flush loses them.
            videos = row["result"].get("videos") or []
            await archives.enqueue(conn, task_id=task_id, team_id=row["team_id"], videos=videos)
            payload_row = {**dict(row), "archive": await archives.task_videos(conn, task_id)}
        await announce.task_event(conn, payload_row, status)
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


async def fail_task(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    from_states: tuple[DispatchState, ...],
    message: str,
    code: str,
) -> asyncpg.Record | None:
    """The one way a task fails: `finish` with Qingbo's error envelope ({message, code})."""
    return await finish(
        conn,
        task_id,
        status=TaskStatus.FAILED,
        from_states=from_states,
        error={"message": message, "code": code},
    )


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
