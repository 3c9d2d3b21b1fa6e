"""The admission statements themselves (budgets/sql/reserve_and_insert_task*.sql), called
through their repository functions on real Postgres: the fast path in one shard (a lone
task is a batch of one), the exclusive path over whole windows, the threshold crossing,
the refusals, each storing nothing; one definition of which budgets cover a task; and the
previous release's call during a rollout."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from service.budgets import repository as budgets
from service.budgets.errors import BudgetShardFull
from service.platform.errors import BudgetExceeded, ConcurrencyLimited
from service.platform.money import format_usd
from tests.factories import ADMIN, TeamKey, make_team

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PRICE = 100_000  # 0.10 USD
THRESHOLDS = [50, 80, 100]


async def new_task(db: asyncpg.Connection, team: TeamKey, *, cost: int = PRICE) -> budgets.NewTask:
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE team_id = $1", team.team["id"])
    return budgets.NewTask(
        task_id="task-" + secrets.token_hex(12),
        team_id=team.team["id"],
        api_key_id=key_id,
        model="minimax-hailuo-2.3",
        action="generate",
        request={"prompt": "a lighthouse"},
        cost_micros=cost,
        priority=0,
        callback_url=None,
        callback_events=[],
        now=NOW,
    )


async def admit(
    db: asyncpg.Connection, team: TeamKey, *, exclusive: bool, cost: int = PRICE
) -> asyncpg.Record:
    task = await new_task(db, team, cost=cost)
    if not exclusive:  # the fast path: a batch of one
        (row,) = await budgets.reserve_and_insert_tasks(db, [task], timezone="UTC")
        return row
    async with db.transaction():
        return await budgets.reserve_and_insert_exclusively(
            db, task, timezone="UTC", alert_percents=THRESHOLDS
        )


async def team_with_budget(client: httpx.AsyncClient, limit: int, **team: Any) -> TeamKey:
    made = await make_team(client, **team)
    body = {"budgets": [{"window": "day", "limit_usd": format_usd(limit)}]}
    answer = await client.put(f"/admin/teams/{made.team['id']}/budgets", json=body, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return made


async def shards(db: asyncpg.Connection, team: TeamKey) -> list[asyncpg.Record]:
    return await db.fetch(
        """
        SELECT s.shard, s.reserved_micros, s.allowance_micros, s.limit_micros
        FROM budget_shards s JOIN budgets b ON b.id = s.budget_id
        WHERE b.team_id = $1 ORDER BY s.shard
        """,
        team.team["id"],
    )


async def stored_tasks(db: asyncpg.Connection, team: TeamKey) -> int:
    return int(await db.fetchval("SELECT count(*) FROM tasks WHERE team_id = $1", team.team["id"]))


async def test_a_window_without_shards_goes_the_exclusive_way_and_shares_out(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await team_with_budget(client, 10 * PRICE)
    with pytest.raises(BudgetShardFull):  # the window's first admission has no shard yet
        await admit(db, team, exclusive=False)
    assert await stored_tasks(db, team) == 0 and await shards(db, team) == []

    row = await admit(db, team, exclusive=True)
    assert row["cost_micros"] == PRICE and row["crossings"] == []
    windows = await shards(db, team)
    assert len(windows) == 16
    assert sum(s["reserved_micros"] for s in windows) == PRICE
    # Shared out short of the 50 % alert (5 prices): 4 prices' room less what is reserved.
    assert sum(s["allowance_micros"] for s in windows) == 5 * PRICE - 1
    assert {s["limit_micros"] for s in windows} == {10 * PRICE}


async def test_the_fast_path_reserves_in_one_shard_within_its_allowance(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await team_with_budget(client, 1000 * PRICE)
    await admit(db, team, exclusive=True)  # creates and shares out the window
    fast = 0
    for _ in range(20):
        try:
            await admit(db, team, exclusive=False)
            fast += 1
        except BudgetShardFull:  # its random shard was full: nothing stored
            pass
    windows = await shards(db, team)
    assert fast > 0
    assert sum(s["reserved_micros"] for s in windows) == (1 + fast) * PRICE
    assert all(s["reserved_micros"] <= s["allowance_micros"] for s in windows)
    assert await stored_tasks(db, team) == 1 + fast
    reserves = await db.fetchval(
        "SELECT count(*) FROM budget_ledger WHERE kind = 'reserve' AND task_id IN "
        "(SELECT id FROM tasks WHERE team_id = $1)",
        team.team["id"],
    )
    assert reserves == 1 + fast


async def test_a_threshold_is_crossed_once_and_only_exclusively(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await team_with_budget(client, 4 * PRICE)
    first = await admit(db, team, exclusive=True)  # 25 %
    assert first["crossings"] == []
    with pytest.raises(BudgetShardFull):  # the fast path may not cross the 50 % alert
        await admit(db, team, exclusive=False)
    second = await admit(db, team, exclusive=True)  # 50 %
    (crossing,) = second["crossings"]
    assert (crossing["percent"], crossing["scope"], crossing["window"]) == (50, "team", "day")
    assert crossing["reserved_micros"] == 2 * PRICE and crossing["limit_micros"] == 4 * PRICE
    third = await admit(db, team, exclusive=True)  # 75 %: no new level
    assert third["crossings"] == []
    alerted = await db.fetchval(
        "SELECT p.alerted_percent FROM budget_periods p JOIN budgets b ON b.id = p.budget_id "
        "WHERE b.team_id = $1",
        team.team["id"],
    )
    assert alerted == 50


async def test_a_budget_refusal_names_the_budget_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await team_with_budget(client, PRICE + PRICE // 2)
    await admit(db, team, exclusive=True)
    with pytest.raises(BudgetExceeded) as refused:
        await admit(db, team, exclusive=True)
    assert "team day budget exceeded: limit 0.15 USD" in refused.value.message
    assert refused.value.extra["budget"]["reserved_usd"] == "0.10"
    assert await stored_tasks(db, team) == 1
    assert sum(s["reserved_micros"] for s in await shards(db, team)) == PRICE


async def test_the_concurrency_cap_refuses_with_its_number(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client, max_concurrent_tasks=2)
    await admit(db, team, exclusive=False)  # no budgets: nothing to reserve
    await admit(db, team, exclusive=True)
    for exclusive in (False, True):  # both paths count the team's unfinished tasks
        with pytest.raises(ConcurrencyLimited) as refused:
            await admit(db, team, exclusive=exclusive)
        assert "already has 2 tasks queued or processing" in refused.value.message
    assert await stored_tasks(db, team) == 2
