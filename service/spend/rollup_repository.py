"""SQL of the daily roll-up of task_charges (migration 0014; spend/rollup.py says how it
is kept and read). Callers own transactions."""

from __future__ import annotations

import asyncpg

ROLLUP_LOCK_KEY = 0x51_47_57_05  # pg advisory lock: one fold at a time

# $1: the time zone; $2: at most this many charges. Oldest first, so a backlog (the
# first fold, or a new time zone) drains in admission order.
_FOLD = """
WITH picked AS (
    SELECT task_id FROM task_charges WHERE NOT rolled_up ORDER BY admitted_at LIMIT $2
), folded AS (
    UPDATE task_charges c SET rolled_up = true FROM picked p
    WHERE c.task_id = p.task_id AND NOT c.rolled_up
    RETURNING c.team_id, c.api_key_id, c.model, c.resolution, c.status, c.amount_micros,
              c.admitted_at
), summed AS (
    INSERT INTO spend_daily AS d (day, team_id, api_key_id, model, resolution, status,
                                  tasks, completed, amount_micros)
    SELECT (admitted_at AT TIME ZONE $1)::date, team_id, api_key_id, model, resolution,
           status, count(*), count(*) FILTER (WHERE status = 'completed'), sum(amount_micros)
    FROM folded GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (day, team_id, api_key_id, model, resolution, status) DO UPDATE SET
        tasks = d.tasks + excluded.tasks,
        completed = d.completed + excluded.completed,
        amount_micros = d.amount_micros + excluded.amount_micros
)
SELECT count(*) FROM folded
"""


async def zone(conn: asyncpg.Connection) -> str | None:
    """The time zone the roll-up's days are in; None before the first fold."""
    found: str | None = await conn.fetchval("SELECT zone FROM spend_rollup_state")
    return found


async def lock(conn: asyncpg.Connection) -> None:
    """One fold at a time, across workers (for the rest of the transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", ROLLUP_LOCK_KEY)


async def fold_batch(conn: asyncpg.Connection, *, timezone: str, batch: int) -> int:
    """Fold up to `batch` charges not yet rolled up; how many were folded."""
    return int(await conn.fetchval(_FOLD, timezone, batch))


async def start_over(conn: asyncpg.Connection, *, timezone: str) -> None:
    """Empty the roll-up and mark every charge unfolded, for days in `timezone`."""
    await conn.execute("DELETE FROM spend_daily")
    await conn.execute("UPDATE task_charges SET rolled_up = false WHERE rolled_up")
    await conn.execute(
        """
        INSERT INTO spend_rollup_state (zone) VALUES ($1)
        ON CONFLICT (singleton) DO UPDATE SET zone = excluded.zone
        """,
        timezone,
    )


async def mismatches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Roll-up rows that disagree with the rolled-up charges they stand for (verify-ledger)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        WITH charged AS (
            SELECT (c.admitted_at AT TIME ZONE s.zone)::date AS day, c.team_id, c.api_key_id,
                   c.model, c.resolution, c.status, count(*) AS tasks,
                   count(*) FILTER (WHERE c.status = 'completed') AS completed,
                   sum(c.amount_micros) AS amount_micros
            FROM task_charges c CROSS JOIN spend_rollup_state s
            WHERE c.rolled_up
            GROUP BY 1, 2, 3, 4, 5, 6
        )
        SELECT coalesce(d.day, c.day) AS day, coalesce(d.team_id, c.team_id) AS team_id,
               coalesce(d.model, c.model) AS model, coalesce(d.status, c.status) AS status,
               d.amount_micros AS rolled_up_micros, c.amount_micros AS charged_micros,
               d.tasks AS rolled_up_tasks, c.tasks AS charged_tasks
        FROM spend_daily d FULL JOIN charged c
          ON (d.day, d.team_id, d.model, d.resolution, d.status)
             = (c.day, c.team_id, c.model, c.resolution, c.status)
         AND d.api_key_id IS NOT DISTINCT FROM c.api_key_id
        WHERE d.day IS NULL OR c.day IS NULL OR d.tasks <> c.tasks
           OR d.completed <> c.completed OR d.amount_micros <> c.amount_micros
        ORDER BY 1, 2
        """
    )
    return rows
