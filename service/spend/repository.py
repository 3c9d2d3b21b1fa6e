"""SQL for what finished tasks cost (`task_charges`, migration 0008), the reports over it,
and its daily roll-up (migration 0014; spend/rollup.py says how it is kept and read).
Callers own transactions.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

# Report dimensions: (what the charges are grouped by, how a group is shown). Grouping
# runs on the raw columns of task_charges alone, and only the groups are then named and
# formatted: joining names or formatting times per row cost far more on a year of a
# million tasks (bench/reports.py; bench/RESULTS.md, "Spend reports"). Days, weeks and
# months are calendar windows of the admission time in the budget time zone ($3), as
# budgets book it.
DIMENSIONS = {
    "day": ("date_trunc('day', c.admitted_at AT TIME ZONE $3)", "to_char({g}, 'YYYY-MM-DD')"),
    "week": ("date_trunc('week', c.admitted_at AT TIME ZONE $3)", "to_char({g}, 'YYYY-MM-DD')"),
    "month": ("date_trunc('month', c.admitted_at AT TIME ZONE $3)", "to_char({g}, 'YYYY-MM')"),
    "model": ("c.model", "{g}"),
    "resolution": ("c.resolution", "{g}"),
    "key": (
        "c.api_key_id",
        "coalesce((SELECT name || ' (' || prefix || ')' FROM api_keys WHERE id = {g}), '')",
    ),
    "status": ("c.status", "{g}"),
    "team": ("c.team_id", "(SELECT name FROM teams WHERE id = {g})"),
    # Grouped by model, then each model named by its family (the catalog's, passed as two
    # arrays: {models} and {families}) and the groups of one family summed.
    "family": (
        "c.model",
        "coalesce((SELECT f.family FROM unnest({models}::text[], {families}::text[])"
        " AS f(model, family) WHERE f.model = {g}), '')",
    ),
}


async def record_charge(conn: asyncpg.Connection, task: Any) -> None:
    """What a task that just finished cost (inside finish()'s transaction)."""
    await conn.execute(
        """
        INSERT INTO task_charges (task_id, team_id, api_key_id, model, resolution, status,
                                  metadata, amount_micros, admitted_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        task["id"],
        task["team_id"],
        task["api_key_id"],
        task["model"],
        task["request"].get("resolution", ""),
        task["status"],
        task["request"].get("metadata") or {},
        task["charged_micros"],
        task["created_at"],
    )


async def charge_mismatches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Finished tasks without exactly their charge row, and charge rows without a finished
    task: the charges report what the tasks say they cost."""
    return await conn.fetch(
        """
        SELECT t.id AS task_id, t.status, t.charged_micros, c.amount_micros,
               c.status AS charge_status
        FROM tasks t LEFT JOIN task_charges c ON c.task_id = t.id
        WHERE t.dispatch_state = 'done'
          AND (c.task_id IS NULL OR c.amount_micros <> coalesce(t.charged_micros, 0)
               OR c.status <> t.status)
        UNION ALL
        SELECT c.task_id, t.status, t.charged_micros, c.amount_micros, c.status
        FROM task_charges c LEFT JOIN tasks t ON t.id = c.task_id
        WHERE t.id IS NULL OR t.dispatch_state <> 'done'
        ORDER BY 1
        """
    )


async def open_disputed(
    conn: asyncpg.Connection, *, since: datetime, until: datetime | None, team_id: UUID | None
) -> int:
    """What open charge disputes (budgets/disputes.py) hold beyond the charges of tasks
    admitted in [since, until): not spent until an admin accepts them."""
    total: int = await conn.fetchval(
        """
        SELECT coalesce(sum(d.excess_micros), 0)::bigint
        FROM charge_disputes d JOIN tasks t ON t.id = d.task_id
        WHERE d.status = 'open' AND t.created_at >= $1
          AND ($2::timestamptz IS NULL OR t.created_at < $2)
          AND ($3::uuid IS NULL OR d.team_id = $3)
        """,
        since,
        until,
        team_id,
    )
    return total


async def month_spend_by_metadata(
    conn: asyncpg.Connection, *, keys: list[str], top: int, now: datetime, timezone: str
) -> list[asyncpg.Record]:
    """This month's spend by the value of each key: the `top` values by spend, the rest
    summed as "(other)", tasks without the key as "(none)"."""
    return await conn.fetch(
        """
        WITH m AS (
            SELECT k AS key, coalesce(c.metadata ->> k, '(none)') AS value,
                   sum(c.amount_micros) AS spent
            FROM task_charges c CROSS JOIN unnest($1::text[]) AS k
            WHERE c.admitted_at >= qgw_period_start('month', $3, $4)
            GROUP BY 1, 2
        ), ranked AS (
            SELECT key, value, spent,
                   row_number() OVER (PARTITION BY key ORDER BY spent DESC, value) AS rank
            FROM m
        )
        SELECT key, CASE WHEN rank <= $2 THEN value ELSE '(other)' END AS value,
               sum(spent)::bigint AS spent_micros
        FROM ranked GROUP BY 1, 2 ORDER BY 1, 2
        """,
        keys,
        top,
        now,
        timezone,
    )


async def team_spend(
    conn: asyncpg.Connection, *, team_id: UUID, now: datetime, timezone: str
) -> list[asyncpg.Record]:
    """The team's money in the current day, week and month, budgets or not: what its tasks
    admitted in the window were charged, and what its live ones admitted then hold."""
    return await conn.fetch(
        """
        SELECT w.period, s.starts_at, qgw_period_end(w.period, s.starts_at, $3) AS resets_at,
               (SELECT coalesce(sum(amount_micros), 0)::bigint FROM task_charges
                 WHERE team_id = $1 AND admitted_at >= s.starts_at) AS spent_micros,
               (SELECT count(*) FROM task_charges
                 WHERE team_id = $1 AND admitted_at >= s.starts_at) AS finished,
               (SELECT coalesce(sum(cost_micros), 0)::bigint FROM tasks
                 WHERE team_id = $1 AND dispatch_state <> 'done'
                   AND created_at >= s.starts_at) AS reserved_micros,
               (SELECT count(*) FROM tasks
                 WHERE team_id = $1 AND dispatch_state <> 'done'
                   AND created_at >= s.starts_at) AS live
        FROM unnest(ARRAY['day', 'week', 'month']) WITH ORDINALITY AS w(period, n)
        CROSS JOIN LATERAL (SELECT qgw_period_start(w.period, $2, $3) AS starts_at) s
        ORDER BY w.n
        """,
        team_id,
        now,
        timezone,
    )


# How the roll-up (spend/rollup.py) gives the time dimensions: its days are already days in
# the budget time zone.
ROLLED_UP_TIMES = {
    "day": "c.day::timestamp",
    "week": "date_trunc('week', c.day::timestamp)",
    "month": "date_trunc('month', c.day::timestamp)",
}


async def report(
    conn: asyncpg.Connection,
    *,
    dimensions: list[str],
    metadata_keys: list[str],
    since: datetime,
    until: datetime | None,
    timezone: str,
    team_id: UUID | None,
    rolled_up_days: tuple[date, date | None] | None = None,
    families: dict[str, str] | None = None,
) -> list[asyncpg.Record]:
    """Spend and task counts of tasks admitted in [since, until) (`until` None: up to now),
    grouped by `dimensions` (names of DIMENSIONS, or `metadata.<key>` with the key in
    `metadata_keys` order). With `rolled_up_days` (the same window as days in the roll-up's
    time zone, which must be `timezone`), the roll-up's rows for those days stand in for
    the charges it holds, and only the charges not yet rolled up are read. A `family`
    dimension names models by `families` (model id -> family)."""
    if rolled_up_days is not None and metadata_keys:
        raise ValueError("the roll-up keeps no metadata: group by it from the charges")
    params: list[Any] = [since, until, timezone, *([key] for key in metadata_keys)]
    names = {}
    if "family" in dimensions:
        mapping = families or {}
        params.extend([list(mapping), list(mapping.values())])
        names = {"models": f"${len(params) - 1}", "families": f"${len(params)}"}
    inner, outer, rolled = [], [], []
    for i, name in enumerate(dimensions):
        if name.startswith("metadata."):
            # Each metadata key is its own one-element array parameter ($4, $5, ...):
            # values stay bind parameters, the SQL holds only the constants above.
            index = 4 + metadata_keys.index(name.removeprefix("metadata."))
            inner.append(f"coalesce(c.metadata ->> (${index}::text[])[1], '')")
            outer.append(f"g{i}")
        else:
            grouped, shown = DIMENSIONS[name]
            inner.append(grouped)
            rolled.append(ROLLED_UP_TIMES.get(name, grouped))
            outer.append(shown.format(g=f"g{i}", **names))
    # Two statements, not "$n IS NULL OR team_id = $n": a generic plan of that form cannot
    # use the (team_id, admitted_at) index.
    team_filter = ""
    if team_id is not None:
        params.append(team_id)
        team_filter = f"AND c.team_id = ${len(params)}"
    columns = "".join(f"{expr} AS g{i}, " for i, expr in enumerate(inner))
    upper = "$2::timestamptz IS NULL" if until is None else "c.admitted_at < $2"
    charges = f"""
        SELECT {columns} 1 AS tasks, (c.status = 'completed')::int AS completed,
               c.amount_micros AS spent
        FROM task_charges c
        WHERE c.admitted_at >= $1 AND {upper}
          {team_filter}
          AND $3::text IS NOT NULL  -- the time zone is a parameter even when unused
    """
    if rolled_up_days is not None:
        params.extend(rolled_up_days)
        first, end = len(params) - 1, len(params)
        rolled_columns = "".join(f"{expr} AS g{i}, " for i, expr in enumerate(rolled))
        charges = f"""
            SELECT {rolled_columns} c.tasks, c.completed, c.amount_micros AS spent
            FROM spend_daily c
            WHERE c.day >= ${first} AND (${end}::date IS NULL OR c.day < ${end}) {team_filter}
            UNION ALL
            {charges} AND NOT c.rolled_up
        """
    groups = ", ".join(f"g{i}" for i in range(len(dimensions)))
    sql = f"""
        WITH grouped AS (
            SELECT {"".join(f"g{i}, " for i in range(len(dimensions)))}
                   coalesce(sum(tasks), 0)::bigint AS tasks,
                   coalesce(sum(completed), 0)::bigint AS completed,
                   coalesce(sum(spent), 0)::bigint AS spent_micros
            FROM ({charges}) c
            {"GROUP BY " + groups if groups else ""}
        )
        SELECT {"".join(f"{expr} AS g{i}, " for i, expr in enumerate(outer))}
               tasks, completed, spent_micros
        FROM grouped
        {"ORDER BY " + groups if groups else ""}
    """
    if names:  # models of one family are one group: sum them (after grouping, not per row)
        sql = f"""
            SELECT {groups}, sum(tasks)::bigint AS tasks, sum(completed)::bigint AS completed,
                   sum(spent_micros)::bigint AS spent_micros
            FROM ({sql}) named GROUP BY {groups} ORDER BY {groups}
        """
    return await conn.fetch(sql, *params)


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
