"""Dispatch claims fairly across teams, by priority within a team, within the in-flight
and submits-per-second caps."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import httpx

from service.tasks import dispatch
from service.tasks.resources import Resources
from tests.factories import make_team, submit, variant


async def test_a_team_with_1000_queued_tasks_does_not_delay_another_teams_first(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    busy, quiet = await make_team(client), await make_team(client)
    for _ in range(10):
        await asyncio.gather(*(submit(client, busy) for _ in range(100)))
    theirs = await submit(client, quiet)
    capped = dataclasses.replace(
        res, settings=res.settings.model_copy(update={"upstream_max_in_flight": 5})
    )
    assert await dispatch.dispatch_pending(capped) == 5  # one dispatch cycle
    claimed = await db.fetch("SELECT id FROM tasks WHERE dispatch_state = 'claimed'")
    assert theirs["task_id"] in {r["id"] for r in claimed}
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE team_id = $1", busy.team["id"]) == (
        1000
    )


async def test_submissions_per_second_cap_spreads_dispatch(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    await asyncio.gather(*(submit(client, team) for _ in range(20)))
    slow = dataclasses.replace(
        res,
        settings=res.settings.model_copy(
            update={"upstream_max_submits_per_second": 0.5, "upstream_submit_burst": 4}
        ),
    )
    await db.execute("UPDATE upstream_state SET submit_tokens = NULL")
    assert await dispatch.dispatch_pending(slow) == 4  # the burst
    assert await dispatch.dispatch_pending(slow) == 0  # then 0.5 per second


async def test_dispatch_is_fair_across_teams(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    busy, quiet = await make_team(client), await make_team(client)
    for _ in range(30):
        await submit(client, busy)
    theirs = await submit(client, quiet)
    capped = variant(res, upstream_max_in_flight=3)
    assert await dispatch.dispatch_pending(capped) == 3
    claimed = await db.fetch("SELECT id, team_id FROM tasks WHERE dispatch_state = 'claimed'")
    assert theirs["task_id"] in {r["id"] for r in claimed}  # within one dispatch cycle
    assert await dispatch.dispatch_pending(capped) == 0  # the in-flight cap is exact


async def test_priority_orders_within_a_team(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    await submit(client, team)
    urgent = await submit(client, team, priority=10)
    assert await dispatch.dispatch_pending(variant(res, upstream_max_in_flight=1)) == 1
    assert (
        await db.fetchval("SELECT id FROM tasks WHERE dispatch_state = 'claimed'")
        == urgent["task_id"]
    )


async def test_slots_a_team_leaves_unused_go_to_the_teams_with_more_waiting(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    busy, quiet = await make_team(client), await make_team(client)
    for _ in range(10):
        await submit(client, busy)
    theirs = await submit(client, quiet)
    # An even share of 6 slots is 3 a team; the quiet team has 1, so the busy one gets 5.
    assert await dispatch.dispatch_pending(variant(res, upstream_max_in_flight=6)) == 6
    claimed = await db.fetch("SELECT id, team_id FROM tasks WHERE dispatch_state = 'claimed'")
    assert theirs["task_id"] in {r["id"] for r in claimed}
    assert sum(str(r["team_id"]) == busy.team["id"] for r in claimed) == 5
