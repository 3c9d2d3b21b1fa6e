"""Admission batches (tasks/admission_batch.py, budgets/sql/reserve_and_insert_tasks.sql)
on real Postgres: several teams' tasks in one statement, all or none; a batch the
statement refuses gives each task its own answer; and concurrent submissions through the
API are batched and keep the ledger exact."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import httpx
from prometheus_client import REGISTRY

from service.budgets import admission_repository as admissions
from service.budgets.service import verify_ledger
from service.platform.errors import BudgetExceeded
from service.tasks.admission_batch import AdmissionBatcher
from service.tasks.resources import Resources
from tests.budgets.test_repository import PRICE, new_task, team_with_budget
from tests.factories import TeamKey, make_team, task_body, until


async def open_window(db: asyncpg.Connection, team: TeamKey) -> None:
    """The window's first admission goes the exclusive way and makes its shards."""
    task = await new_task(db, team)
    async with db.transaction():
        await admissions.reserve_and_insert_task(
            db, **task.columns(), timezone="UTC", alert_percents=[], exclusive=True
        )


async def stored(db: asyncpg.Connection, tasks: list[admissions.NewTask]) -> int:
    ids = [t.task_id for t in tasks]
    return int(await db.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1)", ids))


async def test_one_statement_admits_several_teams_tasks_or_none(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    roomy = [await team_with_budget(client, 100 * PRICE) for _ in range(2)]
    full = await team_with_budget(client, PRICE)  # its one task is admitted below
    capped = await make_team(client, max_concurrent_tasks=5)
    for team in (*roomy, full):
        await open_window(db, team)

    batch = [await new_task(db, team) for team in (*roomy, roomy[0])]
    batch[1] = dataclasses.replace(batch[1], callback_events=["completed", "failed"])
    rows = await admissions.reserve_and_insert_tasks(db, batch, timezone="UTC")
    assert rows is not None and [r["id"] for r in rows] == [t.task_id for t in batch]
    assert all(r["crossings"] == [] and r["status"] == "queued" for r in rows)
    assert [r["callback_events"] for r in rows] == [[], ["completed", "failed"], []]
    assert await db.fetchval(
        "SELECT array_agg(task_id ORDER BY task_id) FROM budget_ledger WHERE kind = 'reserve'"
        " AND task_id = ANY($1)",
        [t.task_id for t in batch],
    ) == sorted(t.task_id for t in batch)

    for refused_with in (full, capped):  # no room in the shard; a capped team
        declined = [await new_task(db, roomy[1]), await new_task(db, refused_with)]
        assert await admissions.reserve_and_insert_tasks(db, declined, timezone="UTC") is None
        assert await stored(db, declined) == 0  # not even the one that had room
    report = await verify_ledger(db)
    assert report.ok, report


async def test_a_refused_batch_gives_each_task_its_own_answer(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources
) -> None:
    roomy = await team_with_budget(client, 100 * PRICE)
    full = await team_with_budget(client, PRICE)
    for team in (roomy, full):
        await open_window(db, team)
    # One batch at Postgres at a time: the first goes alone, the three after it together.
    batcher = AdmissionBatcher(res.pool, max_in_flight=1)
    tasks = [await new_task(db, t) for t in (roomy, roomy, full, roomy)]
    answers = await asyncio.gather(
        *(batcher.admit(t, timezone="UTC", alert_percents=[]) for t in tasks),
        return_exceptions=True,
    )
    await batcher.close()
    assert [type(a).__name__ for a in answers] == ["Record", "Record", "BudgetShardFull", "Record"]
    assert await stored(db, tasks) == 3
    report = await verify_ledger(db)
    assert report.ok, report


async def test_an_admission_whose_request_went_away_while_waiting_is_not_made(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources
) -> None:
    team = await team_with_budget(client, 100 * PRICE)
    await open_window(db, team)
    batcher = AdmissionBatcher(res.pool, max_in_flight=1)
    first, gone = await new_task(db, team), await new_task(db, team)
    async with db.transaction():  # the window's shards locked: the first waits at Postgres
        await db.execute(
            "SELECT 1 FROM budget_shards s JOIN budgets b ON b.id = s.budget_id"
            " WHERE b.team_id = $1 FOR UPDATE OF s",
            team.team["id"],
        )
        sent = asyncio.create_task(batcher.admit(first, timezone="UTC", alert_percents=[]))
        waiting = asyncio.create_task(batcher.admit(gone, timezone="UTC", alert_percents=[]))
        await until(lambda: batcher.waiting == 1)  # the other waits its turn behind it
        waiting.cancel()
        await until(waiting.done)
    await sent
    await batcher.close()
    assert await stored(db, [first]) == 1 and await stored(db, [gone]) == 0


def batched_admissions() -> tuple[float, float]:
    """(admissions, batches) sent to Postgres so far in this process."""
    count = REGISTRY.get_sample_value("qgw_admission_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("qgw_admission_batch_size_sum") or 0.0
    return total, count


async def test_concurrent_submissions_share_statements_and_the_ledger_stays_exact(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    teams = [await team_with_budget(client, 1_000 * PRICE) for _ in range(3)]
    exhausted = await team_with_budget(client, 1)  # below any price: always refused
    for team in teams:  # each window's first admission makes its shards
        warm = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
        assert warm.status_code == 200, warm.text
    before = batched_admissions()
    posts = [
        client.post("/v1/tasks", json=task_body(), headers=team.headers)
        for team in [*teams * 10, exhausted, exhausted]
    ]
    answers = await asyncio.gather(*posts)
    assert [a.status_code for a in answers] == [200] * 30 + [402, 402]
    assert {a.json()["error"]["code"] for a in answers[30:]} == {BudgetExceeded.code}
    after = batched_admissions()
    admissions, batches = after[0] - before[0], after[1] - before[1]
    assert admissions >= 30 and batches < admissions  # some went together
    assert len({a.json()["task_id"] for a in answers[:30]}) == 30
    report = await verify_ledger(db)
    assert report.ok, report
