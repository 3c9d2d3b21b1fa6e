"""Charge disputes (issue 31): Qingbo reported more than the budgets may be charged.

A completed task charges its budgets what Qingbo reported, but at most its reservation
times QGW_CHARGE_CAP_FACTOR: `cost: 5e14` quota (a billion dollars) must not block the
company until a window resets, forever for a `total` one. What Qingbo reported is kept (the
task's `upstream_cost_quota`, the ledger's 'disputed' entries, the dispute itself), and an
admin decides: accept (the excess becomes spend in every budget the task covered) or reject
(the capped charge stands). Both are audited with the dispute before and after.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from service.audit.service import AuditContext, record
from service.budgets import disputes_repository as repository
from service.budgets.errors import DisputeResolved
from service.platform.errors import NotFound
from service.platform.metrics import CHARGE_DISPUTED_USD, CHARGE_DISPUTES
from service.platform.money import MICROS_PER_USD, format_usd

logger = logging.getLogger(__name__)


async def open_if_over_cap(
    conn: asyncpg.Connection, task: Any, *, reported_micros: int | None
) -> int | None:
    """Inside finish()'s transaction, after the task settled at its (capped) charge: if
    Qingbo reported more, open a dispute for the difference; its id, else None."""
    charged = task["charged_micros"]
    if reported_micros is None or charged is None or reported_micros <= charged:
        return None
    dispute_id = await repository.open_dispute(
        conn,
        task_id=task["id"],
        team_id=task["team_id"],
        model=task["model"],
        reserved_micros=task["cost_micros"],
        reported_micros=reported_micros,
        charged_micros=charged,
    )
    excess = reported_micros - charged
    CHARGE_DISPUTES.labels(task["team_name"], task["model"]).inc()
    CHARGE_DISPUTED_USD.labels(task["team_name"], task["model"]).inc(excess / MICROS_PER_USD)
    logger.warning(
        "Qingbo charged beyond the cap: disputed",
        extra={
            "task_id": task["id"],
            "dispute_id": dispute_id,
            "reported_usd": format_usd(reported_micros),
            "charged_usd": format_usd(charged),
        },
    )
    return dispute_id


def shown(row: Any) -> dict[str, Any]:
    """A dispute as the admin API shows it (USD as decimal strings)."""
    return {
        "id": row["id"],
        "task_id": row["task_id"],
        "team_id": row["team_id"],
        "team_name": row["team_name"],
        "model": row["model"],
        "status": row["status"],
        "reserved_usd": format_usd(row["reserved_micros"]),
        "reported_usd": format_usd(row["reported_micros"]),
        "charged_usd": format_usd(row["charged_micros"]),
        "disputed_usd": format_usd(row["excess_micros"]),
        "created_at": row["created_at"],
        "resolved_at": row["resolved_at"],
    }


async def list_disputes(
    conn: asyncpg.Connection, *, status: str | None, limit: int
) -> dict[str, Any]:
    rows = await repository.list_disputes(conn, status=status, limit=limit)
    return {"disputes": [shown(r) for r in rows]}


async def resolve(
    conn: asyncpg.Connection, *, dispute_id: int, accept: bool, audit: AuditContext
) -> dict[str, Any]:
    """Accept (charge the excess to the task's budgets and spend) or reject (the capped
    charge stands) an open dispute, audited; a resolved one is refused, unchanged."""
    async with conn.transaction():
        before = await repository.lock_dispute(conn, dispute_id)
        if before is None:
            raise NotFound("dispute not found")
        if before["status"] != "open":
            raise DisputeResolved(f"dispute {dispute_id} is already {before['status']}")
        if accept:
            await repository.charge_excess(
                conn, task_id=before["task_id"], excess_micros=before["excess_micros"]
            )
        after = await repository.resolve(
            conn, dispute_id, status="accepted" if accept else "rejected"
        )
        await record(
            conn,
            audit,
            action="dispute.accept" if accept else "dispute.reject",
            target_type="dispute",
            target_id=dispute_id,
            before=_audited(before),
            after=_audited(after),
        )
    return shown(after)


def _audited(row: Any) -> dict[str, Any]:
    return {
        k: v for k, v in shown(row).items() if k not in ("created_at", "resolved_at", "team_name")
    } | {"resolved_at": row["resolved_at"].isoformat() if row["resolved_at"] else None}
