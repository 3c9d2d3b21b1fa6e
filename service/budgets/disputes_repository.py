"""SQL of charge disputes (migration 0017; budgets/disputes.py says what they are). Callers
own transactions.

Accepting one moves money in three places that must agree (verify-ledger checks each): the
budgets (qgw_charge_dispute, budgets/sql/settle_task.sql), the task's `charged_micros`, and
its spend (its `task_charges` row and, once folded, its `spend_daily` row). They change
together here, in one statement each, in the caller's transaction.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

# Every column, and the team's name.
_DISPUTE = """
    SELECT d.*, (SELECT name FROM teams WHERE teams.id = d.team_id) AS team_name
    FROM charge_disputes d
"""


async def open_dispute(
    conn: asyncpg.Connection,
    *,
    task_id: str,
    team_id: UUID,
    model: str,
    reserved_micros: int,
    reported_micros: int,
    charged_micros: int,
) -> int:
    """Record the excess of `reported_micros` over the capped charge, as a dispute and as
    'disputed' ledger entries beside the task's budgets (neither spent nor reserved)."""
    dispute_id: int = await conn.fetchval(
        """
        INSERT INTO charge_disputes (task_id, team_id, model, reserved_micros, reported_micros,
                                     charged_micros, excess_micros)
        VALUES ($1, $2, $3, $4, $5::bigint, $6::bigint, $5::bigint - $6::bigint)
        RETURNING id
        """,
        task_id,
        team_id,
        model,
        reserved_micros,
        reported_micros,
        charged_micros,
    )
    await conn.execute("SELECT qgw_dispute_task($1, $2)", task_id, reported_micros - charged_micros)
    return dispute_id


async def list_disputes(
    conn: asyncpg.Connection, *, status: str | None, limit: int
) -> list[asyncpg.Record]:
    """Disputes, oldest first, of one status (None: all), with the team's name."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _DISPUTE + " WHERE $1::text IS NULL OR d.status = $1 ORDER BY d.id LIMIT $2",
        status,
        limit,
    )
    return rows


async def lock_dispute(conn: asyncpg.Connection, dispute_id: int) -> asyncpg.Record | None:
    """The dispute, locked until the transaction ends: one admin resolves it, once."""
    row: asyncpg.Record | None = await conn.fetchrow(
        _DISPUTE + " WHERE d.id = $1 FOR UPDATE", dispute_id
    )
    return row


async def resolve(conn: asyncpg.Connection, dispute_id: int, *, status: str) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """
        UPDATE charge_disputes d SET status = $2, resolved_at = now()
        WHERE id = $1 AND status = 'open'
        RETURNING d.*, (SELECT name FROM teams WHERE teams.id = d.team_id) AS team_name
        """,
        dispute_id,
        status,
    )
    return row


async def charge_excess(conn: asyncpg.Connection, *, task_id: str, excess_micros: int) -> None:
    """The excess becomes spend: in the task's budgets, its charged amount and its spend
    rows (the day's roll-up too, when the charge was already folded into it)."""
    await conn.execute("SELECT qgw_charge_dispute($1, $2)", task_id, excess_micros)
    await conn.execute(
        "UPDATE tasks SET charged_micros = charged_micros + $2, updated_at = now() WHERE id = $1",
        task_id,
        excess_micros,
    )
    await conn.execute(
        """
        WITH charge AS (
            UPDATE task_charges SET amount_micros = amount_micros + $2
            WHERE task_id = $1
            RETURNING rolled_up, team_id, api_key_id, model, resolution, status, admitted_at
        )
        UPDATE spend_daily d SET amount_micros = d.amount_micros + $2
        FROM charge c CROSS JOIN spend_rollup_state s
        WHERE c.rolled_up AND d.day = (c.admitted_at AT TIME ZONE s.zone)::date
          AND d.team_id = c.team_id AND d.api_key_id IS NOT DISTINCT FROM c.api_key_id
          AND d.model = c.model AND d.resolution = c.resolution AND d.status = c.status
        """,
        task_id,
        excess_micros,
    )


async def open_totals(conn: asyncpg.Connection) -> tuple[int, int]:
    """How many disputes are open, and their excess in micro-dollars."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(excess_micros), 0)::bigint AS micros "
        "FROM charge_disputes WHERE status = 'open'"
    )
    return int(row["n"]), int(row["micros"])


async def ledger_disagreements(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Disputes whose 'disputed' ledger entries are not their excess in each of the task's
    budgets (verify-ledger)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT d.id, d.task_id, d.excess_micros, l.budget_id, l.disputed
        FROM charge_disputes d
        JOIN (SELECT task_id, budget_id,
                     sum(amount_micros) FILTER (WHERE kind = 'disputed') AS disputed
              FROM budget_ledger GROUP BY task_id, budget_id) l ON l.task_id = d.task_id
        WHERE l.disputed IS DISTINCT FROM d.excess_micros
        ORDER BY d.id
        """
    )
    return rows
