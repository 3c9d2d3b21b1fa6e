"""Admission's SQL: the statements that reserve a task's price under every budget covering
it and insert it, one task at a time or several at once (`service/budgets/sql/`:
reserve_and_insert_task.sql, reserve_and_insert_tasks.sql). Callers own transactions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.budgets.errors import admission_refusal


async def reserve_and_insert_task(
    conn: asyncpg.Connection,
    *,
    task_id: str,
    team_id: UUID,
    api_key_id: UUID,
    model: str,
    action: str,
    request: dict[str, Any],
    cost_micros: int,
    priority: int,
    callback_url: str | None,
    callback_events: list[str],
    now: datetime,
    timezone: str,
    alert_percents: list[int],
    exclusive: bool = False,
) -> asyncpg.Record:
    """Reserve the task's price under every budget covering it and insert it, in one
    statement; the row is the task plus `crossings` (the alert thresholds it crossed).

    Raises BudgetExceeded or ConcurrencyLimited, and nothing is stored then. Without
    `exclusive` it may also raise BudgetShardFull: run it again with `exclusive`
    (budgets/sql/reserve_and_insert_task.sql says why).
    """
    try:
        row = await conn.fetchrow(
            """
            SELECT (a.task).*, a.crossings
            FROM qgw_reserve_and_insert_task($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                             $13, $14) a
            """,
            task_id,
            team_id,
            api_key_id,
            model,
            action,
            request,
            cost_micros,
            priority,
            callback_url,
            callback_events,
            now,
            timezone,
            alert_percents,
            exclusive,
        )
    except asyncpg.PostgresError as exc:
        refusal = admission_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    assert row is not None
    return row


@dataclass(frozen=True)
class NewTask:
    """One task to admit in a batch (reserve_and_insert_tasks)."""

    task_id: str
    team_id: UUID
    api_key_id: UUID
    model: str
    action: str
    request: dict[str, Any]
    cost_micros: int
    priority: int
    callback_url: str | None
    callback_events: list[str]
    now: datetime  # when it was admitted, for its budget windows

    def columns(self) -> dict[str, Any]:
        """As keyword arguments of `reserve_and_insert_task`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # no copies


async def reserve_and_insert_tasks(
    conn: asyncpg.Connection, tasks: list[NewTask], *, timezone: str
) -> list[asyncpg.Record] | None:
    """Admit every task of `tasks` in one statement, by the fast path of
    `reserve_and_insert_task`, or none of them: None then, and nothing is stored
    (budgets/sql/reserve_and_insert_tasks.sql says when). Rows in the order of `tasks`,
    each with the columns of `reserve_and_insert_task`'s (its `crossings` empty: the fast
    path crosses no alert threshold)."""
    try:
        rows = await conn.fetch(
            "SELECT a.*, '[]'::jsonb AS crossings"
            " FROM qgw_reserve_and_insert_tasks($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
            " $12) a",
            [t.task_id for t in tasks],
            [t.team_id for t in tasks],
            [t.api_key_id for t in tasks],
            [t.model for t in tasks],
            [t.action for t in tasks],
            [t.request for t in tasks],
            [t.cost_micros for t in tasks],
            [t.priority for t in tasks],
            [t.callback_url for t in tasks],
            # A list per task would be a second array dimension: joined (event names
            # have no commas).
            [",".join(t.callback_events) for t in tasks],
            [t.now for t in tasks],
            timezone,
        )
    except asyncpg.PostgresError:
        return None  # each on its own then: that gives each its own answer
    by_id = {row["id"]: row for row in rows}
    return [by_id[t.task_id] for t in tasks]
