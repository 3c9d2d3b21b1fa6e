"""arq entry point of the spend domain: the cron that folds finished tasks' charges into
the daily roll-up reports read (rollup.py)."""

from __future__ import annotations

from typing import Any

from service.spend import rollup


async def roll_up_spend(ctx: dict[str, Any]) -> int:
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
    async with res.pool.acquire() as conn:
        return await rollup.fold(conn, timezone=res.settings.budget_timezone)
