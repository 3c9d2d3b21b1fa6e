"""SQL for budgets: admission against them, their periods, standing and the ledger.
Callers own transactions.

The money moves happen in the SQL functions of `service/budgets/sql/`, one statement
each, row locks in one fixed order. Admission has one fast path,
`qgw_reserve_and_insert_tasks` (`reserve_and_insert_tasks` here: several tasks at once, or
a lone one), and one exclusive path for what the fast path refuses,
`qgw_reserve_and_insert_task` (`reserve_and_insert_exclusively`); which budgets cover a
task is `qgw_covering_budgets`, read by both and by estimates (`covering_standing`).
Settlement is `qgw_settle_task`. A window's spent and reserved are the sums over its shards
(`budget_shards`). Ledger kinds: reserve, then settle or release of the same amount; a
completed task whose charge differs from its reservation also gets an overcharge or
undercharge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.budgets.errors import admission_refusal


@dataclass(frozen=True)
class NewTask:
    """A task to admit: its row, and when it was admitted (for its budget windows)."""

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
    now: datetime


async def reserve_and_insert_tasks(
    conn: asyncpg.Connection, tasks: list[NewTask], *, timezone: str
) -> list[asyncpg.Record]:
    """The fast path: admit every task of `tasks` in one statement, or none of them
    (budgets/sql/reserve_and_insert_tasks.sql). Rows in the order of `tasks`: the task,
    and `crossings`, always empty (the fast path crosses no alert threshold).

    Refusals store nothing: BudgetShardFull (a lone task goes the exclusive way then,
    several each on its own), CappedTeamInBatch (several: each on its own), and for a lone
    task of a capped team ConcurrencyLimited. Any other database error is raised as it is.
    """
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
    except asyncpg.PostgresError as exc:
        refusal = admission_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    if len(rows) == 1:
        return list(rows)
    by_id = {row["id"]: row for row in rows}
    return [by_id[t.task_id] for t in tasks]


async def reserve_and_insert_exclusively(
    conn: asyncpg.Connection, task: NewTask, *, timezone: str, alert_percents: list[int]
) -> asyncpg.Record:
    """The exclusive path, for a task the fast path refused with BudgetShardFull: reserve
    its price under every budget covering it on whole windows, and insert it, in one
    statement (budgets/sql/reserve_and_insert_task.sql). The row is the task plus
    `crossings`, the alert thresholds it crossed (the caller writes their webhooks in its
    transaction). Raises BudgetExceeded or ConcurrencyLimited, and nothing is stored then.
    """
    try:
        row = await conn.fetchrow(
            """
            SELECT (a.task).*, a.crossings
            FROM qgw_reserve_and_insert_task($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                             $13) a
            """,
            task.task_id,
            task.team_id,
            task.api_key_id,
            task.model,
            task.action,
            task.request,
            task.cost_micros,
            task.priority,
            task.callback_url,
            task.callback_events,
            task.now,
            timezone,
            alert_percents,
        )
    except asyncpg.PostgresError as exc:
        refusal = admission_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    assert row is not None
    return row


async def settle_task(
    conn: asyncpg.Connection, *, task_id: str, completed: bool, charged_micros: int | None
) -> None:
    """Turn the task's reservations into spend at `charged_micros` (None: at the reserved
    amount), or release them."""
    await conn.execute("SELECT qgw_settle_task($1, $2, $3)", task_id, completed, charged_micros)


# Ledger sums: spent moves with settle and the charge drift, reserved with reserve/settle/release.
_SPENT = (
    "coalesce(sum(CASE kind WHEN 'settle' THEN amount_micros WHEN 'overcharge' THEN amount_micros"
    " WHEN 'undercharge' THEN -amount_micros END), 0)"
)
_RESERVED = (
    "sum(CASE kind WHEN 'reserve' THEN amount_micros WHEN 'settle' THEN -amount_micros"
    " WHEN 'release' THEN -amount_micros ELSE 0 END)"
)


async def team_concurrency(conn: asyncpg.Connection, team_id: UUID) -> asyncpg.Record | None:
    """The team's max_concurrent_tasks and how many of its tasks are not done yet."""
    return await conn.fetchrow(
        """
        SELECT max_concurrent_tasks,
               (SELECT count(*) FROM tasks
                 WHERE team_id = $1 AND dispatch_state <> 'done') AS active_tasks
        FROM teams WHERE id = $1
        """,
        team_id,
    )


async def team_exists(conn: asyncpg.Connection, team_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM teams WHERE id = $1", team_id))


async def key_team(conn: asyncpg.Connection, key_id: UUID) -> UUID | None:
    return await conn.fetchval("SELECT team_id FROM api_keys WHERE id = $1", key_id)


async def scope_limits(
    conn: asyncpg.Connection, *, scope: str, team_id: UUID | None, api_key_id: UUID | None
) -> dict[str, int]:
    """The scope's live budgets: window -> limit in micro-dollars."""
    rows = await conn.fetch(
        """
        SELECT period, limit_micros FROM budgets
        WHERE scope = $1 AND team_id IS NOT DISTINCT FROM $2
          AND api_key_id IS NOT DISTINCT FROM $3 AND limit_micros IS NOT NULL
        ORDER BY period
        """,
        scope,
        team_id,
        api_key_id,
    )
    return {r["period"]: r["limit_micros"] for r in rows}


async def replace_budgets(
    conn: asyncpg.Connection,
    *,
    scope: str,
    team_id: UUID | None,
    api_key_id: UUID | None,
    limits: dict[str, int],
) -> None:
    """Set the scope's budgets to exactly `limits` (period -> micros); others are removed.

    Removed budgets keep their row (limit NULL) so reservations made under them settle.
    A budget whose limit changes has its alert levels re-armed for the new limit: the next
    admission announces the highest level it stands at (or will cross) against it.
    """
    await conn.execute(
        """
        UPDATE budget_periods p SET alerted_percent = 0
        FROM budgets b
        WHERE p.budget_id = b.id AND b.scope = $1 AND b.team_id IS NOT DISTINCT FROM $2
          AND b.api_key_id IS NOT DISTINCT FROM $3
          AND b.limit_micros IS DISTINCT FROM ($4::jsonb ->> b.period)::bigint
        """,
        scope,
        team_id,
        api_key_id,
        limits,
    )
    await conn.execute(
        """
        UPDATE budgets SET limit_micros = NULL, updated_at = now()
        WHERE scope = $1 AND team_id IS NOT DISTINCT FROM $2
          AND api_key_id IS NOT DISTINCT FROM $3 AND NOT (period = ANY($4::text[]))
          AND limit_micros IS NOT NULL
        """,
        scope,
        team_id,
        api_key_id,
        list(limits),
    )
    await conn.executemany(
        """
        INSERT INTO budgets (scope, team_id, api_key_id, period, limit_micros)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (scope,
                     coalesce(team_id, '00000000-0000-0000-0000-000000000000'::uuid),
                     coalesce(api_key_id, '00000000-0000-0000-0000-000000000000'::uuid),
                     period)
        DO UPDATE SET limit_micros = EXCLUDED.limit_micros, updated_at = now()
        """,
        [(scope, team_id, api_key_id, period, micros) for period, micros in limits.items()],
    )


def _standing(budgets: str) -> str:
    """Each budget of `budgets` (a table or a set-returning call, as `b`) in the window
    that $1 falls in ($2: the time zone), with its team's and key's names."""
    return f"""
    SELECT b.id, b.scope, b.team_id, t.name AS team_name, b.api_key_id, k.name AS key_name,
           b.period, b.limit_micros,
           coalesce(p.spent_micros, 0) AS spent_micros,
           coalesce(p.reserved_micros, 0) AS reserved_micros,
           s.starts_at, qgw_period_end(b.period, s.starts_at, $2) AS resets_at
    FROM {budgets} b
    CROSS JOIN LATERAL (SELECT qgw_period_start(b.period, $1, $2) AS starts_at) s
    LEFT JOIN LATERAL (
        SELECT sum(spent_micros)::bigint AS spent_micros,
               sum(reserved_micros)::bigint AS reserved_micros
        FROM budget_shards WHERE budget_id = b.id AND starts_at = s.starts_at
    ) p ON true
    LEFT JOIN api_keys k ON k.id = b.api_key_id
    LEFT JOIN teams t ON t.id = b.team_id
"""


_STANDING = _standing("budgets")
_ORDER = """
    ORDER BY array_position(ARRAY['company', 'team', 'key'], b.scope), k.created_at, k.id,
             array_position(ARRAY['day', 'week', 'month', 'total'], b.period)
"""


async def team_standing(
    conn: asyncpg.Connection, *, team_id: UUID, now: datetime, timezone: str
) -> list[asyncpg.Record]:
    """Every live budget that covers some task of the team (company, team, its keys)."""
    return await conn.fetch(
        _STANDING
        + " WHERE b.limit_micros IS NOT NULL AND (b.scope = 'company' OR b.team_id = $3)"
        + _ORDER,
        now,
        timezone,
        team_id,
    )


async def covering_standing(
    conn: asyncpg.Connection, *, team_id: UUID, api_key_id: UUID, now: datetime, timezone: str
) -> list[asyncpg.Record]:
    """The live budgets a task submitted with this key would reserve against: the very
    coverage admission reserves by (qgw_covering_budgets)."""
    return await conn.fetch(
        _standing("qgw_covering_budgets($3, $4)") + _ORDER,
        now,
        timezone,
        team_id,
        api_key_id,
    )


async def scope_standing(
    conn: asyncpg.Connection,
    *,
    scope: str,
    team_id: UUID | None,
    api_key_id: UUID | None,
    now: datetime,
    timezone: str,
) -> list[asyncpg.Record]:
    """The live budgets of one scope and subject."""
    return await conn.fetch(
        _STANDING
        + """
        WHERE b.limit_micros IS NOT NULL AND b.scope = $3
          AND b.team_id IS NOT DISTINCT FROM $4 AND b.api_key_id IS NOT DISTINCT FROM $5
        """
        + _ORDER,
        now,
        timezone,
        scope,
        team_id,
        api_key_id,
    )


async def all_standing(
    conn: asyncpg.Connection, *, now: datetime, timezone: str
) -> list[asyncpg.Record]:
    """Every live budget in its current window, with its team's name (metrics)."""
    return await conn.fetch(_STANDING + " WHERE b.limit_micros IS NOT NULL", now, timezone)


async def by_model(
    conn: asyncpg.Connection, periods: list[tuple[int, datetime]]
) -> list[asyncpg.Record]:
    """Spent and reserved per model in the given (budget id, window start) periods."""
    return await conn.fetch(
        f"""
        SELECT l.budget_id, l.model, {_SPENT}::bigint AS spent_micros,
               {_RESERVED}::bigint AS reserved_micros
        FROM budget_ledger l
        JOIN unnest($1::bigint[], $2::timestamptz[]) AS q(budget_id, starts_at)
          ON q.budget_id = l.budget_id AND q.starts_at = l.starts_at
        GROUP BY l.budget_id, l.model
        ORDER BY l.budget_id, l.model
        """,
        [p[0] for p in periods],
        [p[1] for p in periods],
    )


async def count_periods(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM budget_periods"))


async def ledger_mismatches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Budget shards whose spent or reserved differ from the sum of their ledger entries."""
    return await conn.fetch(
        f"""
        SELECT p.budget_id, p.starts_at, p.shard, p.spent_micros, p.reserved_micros,
               coalesce(l.settled, 0) AS ledger_spent, coalesce(l.outstanding, 0) AS ledger_reserved
        FROM budget_shards p
        LEFT JOIN (
            SELECT budget_id, starts_at, shard, {_SPENT} AS settled, {_RESERVED} AS outstanding
            FROM budget_ledger GROUP BY budget_id, starts_at, shard
        ) l USING (budget_id, starts_at, shard)
        WHERE p.spent_micros <> coalesce(l.settled, 0)
           OR p.reserved_micros <> coalesce(l.outstanding, 0)
        ORDER BY p.budget_id, p.starts_at, p.shard
        """
    )


async def overdrawn_shards(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Shards holding more than their allowance (the escrow promise of migration 0005).

    A shard whose allowance was taken back (limit NULL: after an overcharge, 0007) makes
    no promise until the next admission shares out again."""
    return await conn.fetch(
        """
        SELECT budget_id, starts_at, shard, spent_micros, reserved_micros, allowance_micros
        FROM budget_shards
        WHERE spent_micros + reserved_micros > allowance_micros AND limit_micros IS NOT NULL
        ORDER BY budget_id, starts_at, shard
        """
    )


async def orphan_entries(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Ledger entries whose budget shard or task does not exist (the ledger has no foreign
    keys: migration 0006 says why)."""
    return await conn.fetch(
        """
        SELECT l.id, l.budget_id, l.starts_at, l.shard, l.task_id, l.kind, l.amount_micros,
               s.budget_id IS NULL AS no_shard, t.id IS NULL AS no_task
        FROM budget_ledger l
        LEFT JOIN budget_shards s USING (budget_id, starts_at, shard)
        LEFT JOIN tasks t ON t.id = l.task_id
        WHERE s.budget_id IS NULL OR t.id IS NULL
        ORDER BY l.id
        """
    )


async def task_mismatches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Tasks whose ledger entries disagree with their state and price.

    Live tasks hold exactly their price in each budget they reserved against; terminal
    ones hold nothing; completed ones spent exactly what they were charged (the estimate,
    or Qingbo's reported cost); others spent nothing.
    """
    return await conn.fetch(
        f"""
        SELECT t.id, t.status, t.cost_micros, l.budget_id, l.outstanding, l.settled, l.reserved
        FROM tasks t
        JOIN (
            SELECT task_id, budget_id,
                   sum(amount_micros) FILTER (WHERE kind = 'reserve') AS reserved,
                   {_SPENT} AS settled, {_RESERVED} AS outstanding
            FROM budget_ledger GROUP BY task_id, budget_id
        ) l ON l.task_id = t.id
        WHERE l.reserved <> t.cost_micros
           OR l.outstanding <> CASE WHEN t.dispatch_state = 'done' THEN 0 ELSE t.cost_micros END
           OR l.settled <> CASE WHEN t.status = 'completed'
                                THEN coalesce(t.charged_micros, t.cost_micros) ELSE 0 END
        ORDER BY t.id, l.budget_id
        """
    )
