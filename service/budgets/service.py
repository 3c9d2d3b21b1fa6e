"""Budgets: setting them, admitting against them, settling, reporting, and proving the ledger."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.audit.service import AuditContext, record
from service.budgets import repository
from service.budgets.schemas import BudgetLimit
from service.catalog.models import format_usd, parse_usd
from service.errors import (
    BudgetExceeded,
    ConcurrencyLimited,
    InvalidRequest,
    NotFound,
    ServiceError,
)
from service.metrics import BUDGET_THRESHOLD_CROSSINGS
from service.spend import repository as spend_repository
from service.spend.service import usage_windows

logger = logging.getLogger(__name__)

BUDGET_SQLSTATE = "QB402"
CONCURRENCY_SQLSTATE = "QB429"
# A budget shard had no room for a fast admission: run it again exclusively (0005).
SHARD_FULL_SQLSTATE = "QBX01"


def _iso(value: datetime | None) -> str | None:
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


def admission_error(
    exc: asyncpg.PostgresError, *, max_concurrent: int | None
) -> ServiceError | None:
    """The caller-facing error for an admission the database refused (None: not a refusal)."""
    if exc.sqlstate == BUDGET_SQLSTATE:
        detail = json.loads(exc.detail or "{}")
        if detail.get("resets_at"):
            detail["resets_at"] = _iso(datetime.fromisoformat(detail["resets_at"]))
        return budget_exceeded(detail)
    if exc.sqlstate == CONCURRENCY_SQLSTATE:
        return ConcurrencyLimited(
            f"the team already has {max_concurrent} tasks queued or processing "
            "(max_concurrent_tasks); retry when one finishes",
            headers={"Retry-After": "5"},
        )
    return None


def announce_crossings(team_name: str, crossings: list[dict[str, Any]]) -> None:
    """Metric and log event for each budget threshold an admission crossed (the alert
    webhook was written by the admission itself, see migration 0003)."""
    for c in crossings:
        team_label = "" if c["scope"] == "company" else team_name
        BUDGET_THRESHOLD_CROSSINGS.labels(
            team_label, c["scope"], c["window"], str(c["percent"])
        ).inc()
        logger.warning(
            "budget threshold crossed",
            extra={
                "team": team_name,
                "scope": c["scope"],
                "window": c["window"],
                "percent": c["percent"],
                "limit_usd": format_usd(c["limit_micros"]),
                "committed_usd": format_usd(c["spent_micros"] + c["reserved_micros"]),
            },
        )


async def set_budgets(
    conn: asyncpg.Connection,
    *,
    scope: str,
    team_id: UUID | None = None,
    api_key_id: UUID | None = None,
    budgets: list[BudgetLimit],
    audit: AuditContext,
) -> None:
    """Replace the scope's budgets, audited with the limits before and after."""
    limits: dict[str, int] = {}
    for i, budget in enumerate(budgets):
        if budget.window in limits:
            raise InvalidRequest(
                f"budgets[{i}].window: {budget.window!r} is given twice",
                param=f"budgets[{i}].window",
            )
        limits[budget.window] = parse_usd(budget.limit_usd)
    async with conn.transaction():
        if scope == "team" and not await team_exists(conn, team_id):
            raise NotFound("team not found")
        if scope == "key":
            team_id = await key_team(conn, api_key_id)
        before = await repository.scope_limits(
            conn, scope=scope, team_id=team_id, api_key_id=api_key_id
        )
        await repository.replace_budgets(
            conn, scope=scope, team_id=team_id, api_key_id=api_key_id, limits=limits
        )
        await record(
            conn,
            audit,
            action="budgets.set",
            target_type=scope,
            target_id=api_key_id or team_id or "company",
            before={"team_id": team_id, "budgets": _as_usd(before)},
            after={"team_id": team_id, "budgets": _as_usd(limits)},
        )


def _as_usd(limits: dict[str, int]) -> dict[str, str]:
    return {window: format_usd(micros) for window, micros in sorted(limits.items())}


async def team_exists(conn: asyncpg.Connection, team_id: UUID | None) -> bool:
    return team_id is not None and await repository.team_exists(conn, team_id)


async def key_team(conn: asyncpg.Connection, key_id: UUID | None) -> UUID:
    team_id = await repository.key_team(conn, key_id) if key_id is not None else None
    if team_id is None:
        raise NotFound("key not found")
    return team_id


def standing_json(row: Any, by_model: list[Any] | None = None) -> dict[str, Any]:
    limit, spent, reserved = row["limit_micros"], row["spent_micros"], row["reserved_micros"]
    total = row["period"] == "total"
    out: dict[str, Any] = {
        "scope": row["scope"],
        "window": row["period"],
        "limit_usd": format_usd(limit),
        "spent_usd": format_usd(spent),
        "reserved_usd": format_usd(reserved),
        "remaining_usd": format_usd(max(0, limit - spent - reserved)),
        "used_percent": (spent + reserved) * 100 // limit if limit else 100,
        "starts_at": None if total else row["starts_at"],
        "resets_at": None if total else row["resets_at"],
    }
    if row["api_key_id"] is not None:
        out["key_id"] = row["api_key_id"]
        out["key_name"] = row["key_name"]
    if by_model is not None:
        out["by_model"] = [
            {
                "model": m["model"],
                "spent_usd": format_usd(m["spent_micros"]),
                "reserved_usd": format_usd(m["reserved_micros"]),
            }
            for m in by_model
        ]
    return out


async def with_breakdown(conn: asyncpg.Connection, rows: list[Any]) -> list[dict[str, Any]]:
    models = await repository.by_model(conn, [(r["id"], r["starts_at"]) for r in rows])
    grouped: dict[int, list[Any]] = {}
    for m in models:
        grouped.setdefault(m["budget_id"], []).append(m)
    return [standing_json(r, grouped.get(r["id"], [])) for r in rows]


async def team_usage(
    conn: asyncpg.Connection, *, team_id: UUID, now: datetime, timezone: str
) -> dict[str, Any]:
    team = await conn.fetchrow(
        """
        SELECT max_concurrent_tasks,
               (SELECT count(*) FROM tasks
                 WHERE team_id = $1 AND dispatch_state <> 'done') AS active_tasks
        FROM teams WHERE id = $1
        """,
        team_id,
    )
    if team is None:
        raise NotFound("team not found")
    rows = await repository.team_standing(conn, team_id=team_id, now=now, timezone=timezone)
    spend = await spend_repository.team_spend(conn, team_id=team_id, now=now, timezone=timezone)
    return {
        "team_id": team_id,
        "spend": usage_windows(spend),
        "budgets": await with_breakdown(conn, rows),
        "max_concurrent_tasks": team["max_concurrent_tasks"],
        "active_tasks": team["active_tasks"],
    }


async def scope_budgets(
    conn: asyncpg.Connection,
    *,
    scope: str,
    team_id: UUID | None,
    api_key_id: UUID | None,
    now: datetime,
    timezone: str,
) -> dict[str, Any]:
    rows = await repository.scope_standing(
        conn, scope=scope, team_id=team_id, api_key_id=api_key_id, now=now, timezone=timezone
    )
    return {"budgets": await with_breakdown(conn, rows)}


async def check_fit(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    api_key_id: UUID,
    cost_micros: int,
    now: datetime,
    timezone: str,
) -> tuple[bool, list[dict[str, Any]]]:
    """Would a task of this price fit every covering budget right now? Nothing is reserved."""
    rows = await repository.covering_standing(
        conn, team_id=team_id, api_key_id=api_key_id, now=now, timezone=timezone
    )
    checks = []
    for row in rows:
        standing = standing_json(row)
        fits = row["spent_micros"] + row["reserved_micros"] + cost_micros <= row["limit_micros"]
        checks.append(
            {
                k: standing[k]
                for k in (
                    "scope",
                    "window",
                    "limit_usd",
                    "spent_usd",
                    "reserved_usd",
                    "remaining_usd",
                    "resets_at",
                )
            }
            | {"fits": fits}
        )
    return all(c["fits"] for c in checks), checks


@dataclass
class LedgerReport:
    periods_checked: int
    period_mismatches: list[asyncpg.Record]
    task_mismatches: list[asyncpg.Record]
    overdrawn_shards: list[asyncpg.Record]
    orphan_entries: list[asyncpg.Record]
    charge_mismatches: list[asyncpg.Record]

    @property
    def ok(self) -> bool:
        return not (
            self.period_mismatches
            or self.task_mismatches
            or self.overdrawn_shards
            or self.orphan_entries
            or self.charge_mismatches
        )


async def verify_ledger(conn: asyncpg.Connection) -> LedgerReport:
    """Prove every budget shard equals the sum of its ledger entries, every task's entries
    match its state and price, every entry's shard and task exist, and no shard holds more
    than its allowance (one snapshot)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return LedgerReport(
            periods_checked=await conn.fetchval("SELECT count(*) FROM budget_periods"),
            period_mismatches=await repository.ledger_mismatches(conn),
            task_mismatches=await repository.task_mismatches(conn),
            overdrawn_shards=await repository.overdrawn_shards(conn),
            orphan_entries=await repository.orphan_entries(conn),
            charge_mismatches=await spend_repository.charge_mismatches(conn),
        )
