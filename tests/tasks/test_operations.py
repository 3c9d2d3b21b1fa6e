"""The operators' overview (the console's operations page) from the real tables."""

from __future__ import annotations

import asyncpg
import httpx

from service.tasks import repository as tasks_repository
from service.tasks.operations import operations_overview
from service.tasks.resources import Resources
from tests.factories import ADMIN, make_team, submit


async def test_the_overview_counts_waiting_tasks_the_pause_and_budgets_at_levels(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources
) -> None:
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "day", "limit_usd": "1.00"}]},
        headers=ADMIN,
    )
    await submit(client, team)  # two of about 0.31 reserved of 1.00: over the 50 % level
    await submit(client, team)
    empty = await operations_overview(db, settings=res.settings, now=res.clock())
    assert empty["paused_until"] is None and empty["in_flight"] == 0
    await tasks_repository.pause_upstream(db, seconds=30, reason="unauthorized")
    ops = await operations_overview(db, settings=res.settings, now=res.clock())
    assert ops["pause_reason"] == "unauthorized" and ops["paused_until"] is not None
    mine = next(t for t in ops["by_team"] if str(t["team_id"]) == team.team["id"])
    assert (mine["waiting"], mine["in_flight"]) == (2, 0)
    assert ops["max_in_flight"] == res.settings.upstream_max_in_flight
    assert ops["budgets_at_level"][50] >= 1 and ops["budgets_at_level"][100] == 0
