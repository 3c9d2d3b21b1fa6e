"""What admission against budgets can refuse with, built from the database's refusal."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from service.platform.errors import BudgetExceeded, ConcurrencyLimited, ServiceError
from service.platform.money import format_usd

# SQLSTATEs raised by the admission functions (budgets/sql/reserve_and_insert_task*.sql).
BUDGET_SQLSTATE = "QB402"
CONCURRENCY_SQLSTATE = "QB429"
SHARD_FULL_SQLSTATE = "QBX01"
CAPPED_TEAM_IN_BATCH_SQLSTATE = "QBX02"


class DisputeResolved(ServiceError):
    """An admin accepting or rejecting a dispute that is no longer open."""

    status = 409
    code = "dispute_resolved"


class BudgetShardFull(Exception):
    """A shard the fast path picked had no room: nothing was stored. A lone task is admitted
    exclusively then; a batch's tasks each on their own."""


class CappedTeamInBatch(Exception):
    """A batch of several held a task of a team with a max_concurrent_tasks: nothing was
    stored; its tasks are admitted each on its own."""


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def budget_exceeded(detail: dict[str, Any]) -> BudgetExceeded:
    limit, spent, reserved = (
        detail["limit_micros"],
        detail["spent_micros"],
        detail["reserved_micros"],
    )
    resets_at = detail.get("resets_at")
    scope, window = detail["scope"], detail["window"]
    resets = f"; it resets at {resets_at}" if resets_at else "; it does not reset"
    return BudgetExceeded(
        f"{scope} {window} budget exceeded: limit {format_usd(limit)} USD, "
        f"{format_usd(spent)} spent and {format_usd(reserved)} reserved leave "
        f"{format_usd(max(0, limit - spent - reserved))}, this task costs "
        f"{format_usd(detail['cost_micros'])}{resets}",
        extra={
            "budget": {
                "scope": scope,
                "window": window,
                "limit_usd": format_usd(limit),
                "spent_usd": format_usd(spent),
                "reserved_usd": format_usd(reserved),
                "resets_at": resets_at,
            }
        },
    )


def admission_refusal(exc: asyncpg.PostgresError) -> Exception | None:
    """The domain error for an admission the database refused (None: not a refusal)."""
    if exc.sqlstate == SHARD_FULL_SQLSTATE:
        return BudgetShardFull()
    if exc.sqlstate == CAPPED_TEAM_IN_BATCH_SQLSTATE:
        return CappedTeamInBatch()
    if exc.sqlstate not in (BUDGET_SQLSTATE, CONCURRENCY_SQLSTATE):
        return None  # its DETAIL, if any, is Postgres's prose, not ours
    detail = json.loads(exc.detail or "{}")
    if exc.sqlstate == BUDGET_SQLSTATE:
        if detail.get("resets_at"):
            detail["resets_at"] = iso(datetime.fromisoformat(detail["resets_at"]))
        return budget_exceeded(detail)
    return ConcurrencyLimited(
        f"the team already has {detail.get('max_concurrent_tasks')} tasks queued or "
        "processing (max_concurrent_tasks); retry when one finishes",
        headers={"Retry-After": "5"},
    )
