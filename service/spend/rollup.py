"""The daily roll-up of task_charges (migration 0014) that reports read instead of every
charge: a month's report across 100 teams reads a few hundred rows, not a row per task.

The worker's `cron:spend-rollup` folds the charges not yet rolled up into `spend_daily`
and marks them rolled up in the same statement; a report reads the roll-up and the
charges still unfolded in one snapshot (repository.report), so each charge counts once.
Folding in a cron, not in the transaction that finishes a task, keeps the roll-up off the
finish path: every finish of a team on one day would queue on that day's row lock.

Days are days in the budget time zone. When that setting changes, the next fold empties
the roll-up and folds every charge again in the new zone; until it has, reports in the new
zone read the charges themselves.
"""

from __future__ import annotations

import asyncpg

from service.spend import repository

FOLD_BATCH = 20_000


async def fold(conn: asyncpg.Connection, *, timezone: str, batch: int = FOLD_BATCH) -> int:
    """Fold every charge not yet rolled up, `batch` a transaction; how many were folded.
    The caller holds no transaction."""
    total = 0
    while True:
        async with conn.transaction():
            await repository.lock(conn)
            if await repository.zone(conn) != timezone:
                # Another zone puts charges on other days: none of the old roll-up holds.
                await repository.start_over(conn, timezone=timezone)
            folded = await repository.fold_batch(conn, timezone=timezone, batch=batch)
        total += folded
        if folded < batch:
            return total
