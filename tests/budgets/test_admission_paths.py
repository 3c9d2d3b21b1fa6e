"""One fast path for money (issue 33 point 1), on real Postgres: a batch of several and the
same tasks admitted alone write identical rows; which budgets cover a task is one
definition, read alike by both admission paths and by estimates, and costs nothing; the
previous release's call, during a rollout, runs on this release's paths."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
import httpx

from service.budgets import repository as budgets
from service.budgets.service import verify_ledger
from tests.budgets.test_repository import NOW, PRICE, THRESHOLDS, new_task
from tests.budgets.test_routes import put_budgets
from tests.factories import ADMIN, TeamKey, make_team

SEED = 0.25  # the same shard pick for every statement that starts from it


async def team_with_budgets(client: httpx.AsyncClient, db: asyncpg.Connection) -> TeamKey:
    """A team with a team budget and a budget on its key, both roomy."""
    team = await make_team(client)
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE team_id = $1", team.team["id"])
    for path, window in (
        (f"/teams/{team.team['id']}/budgets", "day"),
        (f"/keys/{key_id}/budgets", "total"),
    ):
        assert (await put_budgets(client, path, **{window: 1000 * PRICE})).is_success
    return team


async def exclusively(db: asyncpg.Connection, task: budgets.NewTask) -> asyncpg.Record:
    async with db.transaction():
        return await budgets.reserve_and_insert_exclusively(
            db, task, timezone="UTC", alert_percents=THRESHOLDS
        )


def varied(tasks: list[budgets.NewTask]) -> list[budgets.NewTask]:
    """Tasks that differ in every column a task brings."""
    return [
        dataclasses.replace(
            t,
            cost_micros=PRICE * (i + 1),
            priority=i % 3,
            request={"prompt": f"a lighthouse {i}", "duration": 6 + i},
            callback_url=f"https://app.example/hooks/{i}" if i % 2 else None,
            callback_events=["completed", "failed"][: i % 3],
            model="minimax-hailuo-2.3-fast" if i % 2 else t.model,
        )
        for i, t in enumerate(tasks)
    ]


async def written(db: asyncpg.Connection, team: TeamKey, order: list[str]) -> dict[str, Any]:
    """What admission wrote for the team's tasks (`order`: their ids, in the order given),
    every column but ids and timestamps; budget shards of its team and key budgets."""
    unlike = {"id", "team_id", "api_key_id"} | {
        r["column_name"]
        for r in await db.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'tasks' AND data_type LIKE 'timestamp%'"
        )
    }
    assert {"created_at", "updated_at"} <= unlike
    tasks = {
        r["id"]: {k: v for k, v in r["row"].items() if k not in unlike}
        for r in await db.fetch(
            "SELECT id, to_jsonb(t) AS row FROM tasks t WHERE team_id = $1", team.team["id"]
        )
    }
    ledger = await db.fetch(
        """
        SELECT l.task_id, b.scope, b.period, l.starts_at, l.shard, l.model, l.kind,
               l.amount_micros
        FROM budget_ledger l JOIN budgets b ON b.id = l.budget_id
        WHERE l.task_id = ANY ($1)
        ORDER BY b.scope, l.starts_at, l.kind
        """,
        order,
    )
    shards = await db.fetch(
        """
        SELECT b.scope, b.period, s.starts_at, s.shard, s.spent_micros, s.reserved_micros,
               s.allowance_micros, s.limit_micros
        FROM budget_shards s JOIN budgets b ON b.id = s.budget_id
        WHERE b.team_id = $1
        ORDER BY b.scope, b.period, s.starts_at, s.shard
        """,
        team.team["id"],
    )
    return {
        "tasks": [tasks[i] for i in order],
        "ledger": [
            [dict(e) | {"task_id": None} for e in ledger if e["task_id"] == i] for i in order
        ],
        "shards": [dict(s) for s in shards],
    }


async def test_a_batch_and_the_same_tasks_alone_write_identical_rows(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    together, alone = [await team_with_budgets(client, db) for _ in range(2)]
    ids: dict[str, list[str]] = {}
    for team, batched in ((together, True), (alone, False)):
        await db.execute("SELECT setseed($1)", SEED)
        opening = await exclusively(db, await new_task(db, team))  # makes the shards
        tasks = varied([await new_task(db, team) for _ in range(5)])
        if batched:
            await db.execute("SELECT setseed($1)", SEED)
            rows = await budgets.reserve_and_insert_tasks(db, tasks, timezone="UTC")
        else:
            rows = []
            for task in tasks:  # a lone request: a batch of one, through the same statement
                await db.execute("SELECT setseed($1)", SEED)
                rows += await budgets.reserve_and_insert_tasks(db, [task], timezone="UTC")
        assert [r["id"] for r in rows] == [t.task_id for t in tasks]
        assert all(r["crossings"] == [] for r in rows)
        ids[team.team["id"]] = [opening["id"], *(t.task_id for t in tasks)]

    first = await written(db, together, ids[together.team["id"]])
    second = await written(db, alone, ids[alone.team["id"]])
    assert len(first["tasks"]) == 6 and all(len(e) == 2 for e in first["ledger"])
    assert len(first["tasks"][0]) > 10  # every column but ids and timestamps
    assert len(first["shards"]) == 32  # a day window and a total one, 16 shards each
    reserved = sum(s["reserved_micros"] for s in first["shards"])
    assert reserved == 2 * (PRICE + sum(PRICE * (i + 1) for i in range(5)))
    assert first == second
    report = await verify_ledger(db)
    assert report.ok, report


async def test_admission_and_estimates_read_one_coverage(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team, other = await make_team(client), await make_team(client)
    sibling_key = await client.post(f"/admin/teams/{team.team['id']}/keys", json={}, headers=ADMIN)
    assert sibling_key.status_code == 201
    keys = [
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM api_keys WHERE team_id = $1 ORDER BY created_at", team.team["id"]
        )
    ]
    for path in (
        "/budgets",
        f"/teams/{team.team['id']}/budgets",
        f"/teams/{other.team['id']}/budgets",
        f"/keys/{keys[0]}/budgets",
        f"/keys/{keys[1]}/budgets",
    ):
        assert (await put_budgets(client, path, day=100 * PRICE, week=300 * PRICE)).is_success
    assert (await put_budgets(client, f"/keys/{keys[0]}/budgets", day=100 * PRICE)).is_success
    covering = await budgets.covering_standing(
        db, team_id=team.team["id"], api_key_id=keys[0], now=NOW, timezone="UTC"
    )
    # The company's two, the team's two, and its key's one still set (week removed).
    assert [(b["scope"], b["period"]) for b in covering] == [
        ("company", "day"),
        ("company", "week"),
        ("team", "day"),
        ("team", "week"),
        ("key", "day"),
    ]
    task = await new_task(db, team)  # with keys[0], the team's first key
    first = await exclusively(db, task)
    (second,) = await budgets.reserve_and_insert_tasks(
        db, [await new_task(db, team)], timezone="UTC"
    )
    for admitted in (first["id"], second["id"]):
        reserved_under = await db.fetchval(
            "SELECT array_agg(budget_id ORDER BY budget_id) FROM budget_ledger WHERE task_id = $1",
            admitted,
        )
        assert reserved_under == sorted(b["id"] for b in covering)
    # Inlined into its caller: a scan of budgets, no function call per admission.
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            "EXPLAIN SELECT id FROM qgw_covering_budgets($1, $2)", team.team["id"], keys[0]
        )
    )
    assert "budgets" in plan and "Function Scan" not in plan, plan


async def test_the_previous_releases_call_runs_on_this_releases_paths(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """During a rollout, API pods of the previous release call the 14-argument function:
    its fast call is a batch of one, its exclusive call the exclusive path."""
    team = await team_with_budgets(client, db)
    capped = await make_team(client, max_concurrent_tasks=1)
    call = (
        "SELECT (a.task).id, a.crossings FROM qgw_reserve_and_insert_task($1, $2, $3, $4, $5,"
        " $6, $7, $8, $9, $10, $11, 'UTC', $12, $13) a"
    )

    async def previous(team: TeamKey, *, exclusive: bool) -> asyncpg.Record:
        t = await new_task(db, team)
        return await db.fetchrow(
            call,
            t.task_id,
            t.team_id,
            t.api_key_id,
            t.model,
            t.action,
            t.request,
            t.cost_micros,
            t.priority,
            t.callback_url,
            ["completed"],
            t.now,
            THRESHOLDS,
            exclusive,
        )

    opened = await previous(team, exclusive=True)  # the window's first: it makes the shards
    fast = await previous(team, exclusive=False)
    assert opened["crossings"] == [] and fast["crossings"] == []
    events = await db.fetch(
        "SELECT callback_events FROM tasks WHERE id = ANY ($1)", [opened["id"], fast["id"]]
    )
    assert [e["callback_events"] for e in events] == [["completed"]] * 2
    assert (
        await db.fetchval(
            "SELECT count(*) FROM budget_ledger WHERE task_id = ANY ($1)",
            [opened["id"], fast["id"]],
        )
        == 4
    )
    await previous(capped, exclusive=False)
    try:
        await previous(capped, exclusive=False)
    except asyncpg.PostgresError as refused:
        assert refused.sqlstate == "QB429"
    else:
        raise AssertionError("the capped team's second task was admitted")
    report = await verify_ledger(db)
    assert report.ok, report
