"""Admission batches (tasks/admission_batch.py, budgets/sql/reserve_and_insert_tasks.sql)
on real Postgres: several teams' tasks in one statement, all or none; a batch the
statement refuses for one of its tasks gives each task its own answer; a batch declined
for an unexpected error is counted, logged and answered with it, never admitted one at a
time; concurrent submissions through the API are batched, keep the ledger exact, and
write the rows lone submissions write."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from service.budgets import repository as budgets
from service.budgets.errors import BudgetShardFull, CappedTeamInBatch
from service.budgets.service import verify_ledger
from service.platform.errors import BudgetExceeded
from service.tasks.admission_batch import AdmissionBatcher
from service.tasks.resources import Resources
from tests.budgets.test_repository import PRICE, new_task, team_with_budget
from tests.factories import TeamKey, make_team, metric, task_body, until


async def open_window(db: asyncpg.Connection, team: TeamKey) -> None:
    """The window's first admission goes the exclusive way and makes its shards."""
    task = await new_task(db, team)
    async with db.transaction():
        await budgets.reserve_and_insert_exclusively(db, task, timezone="UTC", alert_percents=[])


async def stored(db: asyncpg.Connection, tasks: list[budgets.NewTask]) -> int:
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
    rows = await budgets.reserve_and_insert_tasks(db, batch, timezone="UTC")
    assert [r["id"] for r in rows] == [t.task_id for t in batch]
    assert all(r["crossings"] == [] and r["status"] == "queued" for r in rows)
    assert [r["callback_events"] for r in rows] == [[], ["completed", "failed"], []]
    assert await db.fetchval(
        "SELECT array_agg(task_id ORDER BY task_id) FROM budget_ledger WHERE kind = 'reserve'"
        " AND task_id = ANY($1)",
        [t.task_id for t in batch],
    ) == sorted(t.task_id for t in batch)

    # No room in the shard; a capped team (whose tasks go one at a time).
    for refused_with, refusal in ((full, BudgetShardFull), (capped, CappedTeamInBatch)):
        declined = [await new_task(db, roomy[1]), await new_task(db, refused_with)]
        with pytest.raises(refusal):
            await budgets.reserve_and_insert_tasks(db, declined, timezone="UTC")
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
    before = metric("qgw_admission_batches_declined_total", reason="shard_full")
    answers = await asyncio.gather(
        *(batcher.admit(t, timezone="UTC") for t in tasks), return_exceptions=True
    )
    await batcher.close()
    assert [type(a).__name__ for a in answers] == ["Record", "Record", "BudgetShardFull", "Record"]
    assert await stored(db, tasks) == 3
    assert metric("qgw_admission_batches_declined_total", reason="shard_full") == before + 1
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
        sent = asyncio.create_task(batcher.admit(first, timezone="UTC"))
        waiting = asyncio.create_task(batcher.admit(gone, timezone="UTC"))
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


async def test_a_batch_declined_for_an_unexpected_error_is_counted_logged_and_answered_with_it(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    res: Resources,
    caplog: pytest.LogCaptureFixture,
) -> None:
    team = await team_with_budget(client, 100 * PRICE)
    await open_window(db, team)
    batcher = AdmissionBatcher(res.pool, max_in_flight=1)
    tasks = [await new_task(db, team) for _ in range(4)]
    # A key that is not there: the tasks' foreign key refuses it, an error of no refusal.
    tasks[2] = dataclasses.replace(tasks[2], api_key_id=uuid.uuid4())
    reason = "ForeignKeyViolationError"
    before = metric("qgw_admission_batches_declined_total", reason=reason)
    with caplog.at_level(logging.ERROR, logger="service.tasks.admission_batch"):
        # The first goes alone; the three after it together.
        answers = await asyncio.gather(
            *(batcher.admit(t, timezone="UTC") for t in tasks), return_exceptions=True
        )
    await batcher.close()
    assert type(answers[0]).__name__ == "Record"
    assert all(isinstance(a, asyncpg.ForeignKeyViolationError) for a in answers[1:]), answers
    # Not admitted one at a time: alone, the second and the fourth would have been.
    assert await stored(db, tasks) == 1
    assert metric("qgw_admission_batches_declined_total", reason=reason) == before + 1
    (logged,) = [r for r in caplog.records if r.getMessage() == "admission batch declined"]
    assert (logged.reason, logged.tasks, logged.sqlstate) == (reason, 3, "23503")  # type: ignore[attr-defined]
    report = await verify_ledger(db)
    assert report.ok, report


async def what_was_written(db: asyncpg.Connection, team: TeamKey) -> dict[str, Any]:
    """The team's tasks and ledger entries, every column but ids, timestamps and the shard
    (each statement picks one at random), in a stable order; and each of its budget windows'
    totals over its shards."""
    unlike = {"id", "team_id", "api_key_id"} | {
        r["column_name"]
        for r in await db.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'tasks' AND data_type LIKE 'timestamp%'"
        )
    }
    tasks = [
        {k: v for k, v in r["row"].items() if k not in unlike}
        for r in await db.fetch(
            "SELECT to_jsonb(t) AS row FROM tasks t WHERE team_id = $1", team.team["id"]
        )
    ]
    ledger = await db.fetch(
        """
        SELECT b.scope, b.period, l.starts_at, l.model, l.kind, l.amount_micros, count(*)
        FROM budget_ledger l JOIN budgets b ON b.id = l.budget_id
        JOIN tasks t ON t.id = l.task_id
        WHERE t.team_id = $1
        GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
        """,
        team.team["id"],
    )
    windows = await db.fetch(
        """
        SELECT b.scope, b.period, s.starts_at, count(*) AS shards, sum(s.spent_micros) AS spent,
               sum(s.reserved_micros) AS reserved, sum(s.allowance_micros) AS allowance,
               array_agg(DISTINCT s.limit_micros) AS limits
        FROM budget_shards s JOIN budgets b ON b.id = s.budget_id
        WHERE b.team_id = $1
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """,
        team.team["id"],
    )
    return {
        "tasks": sorted(tasks, key=repr),
        "ledger": [dict(e) for e in ledger],
        "windows": [dict(w) for w in windows],
    }


async def test_batched_lone_capped_and_keyed_submissions_write_identical_rows(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Every way into admission writes what a lone submission writes: tasks in a batch, a
    lone one (a batch of one), a capped team's (a batch of one on its own connection), one
    with an Idempotency-Key (a batch of one in a transaction)."""
    teams = [
        await team_with_budget(client, 1_000 * PRICE),
        await team_with_budget(client, 1_000 * PRICE),
        await team_with_budget(client, 1_000 * PRICE, max_concurrent_tasks=100),
        await team_with_budget(client, 1_000 * PRICE),
    ]
    batched, lone, capped, keyed = teams
    body = task_body(prompt="a lighthouse at dusk")

    async def post(team: TeamKey, **headers: str) -> httpx.Response:
        return await client.post("/v1/tasks", json=body, headers=team.headers | headers)

    for team in teams:  # each window's first admission makes its shards
        assert (await post(team)).status_code == 200
    before = batched_admissions()
    answers = await asyncio.gather(*(post(batched) for _ in range(12)))
    after = batched_admissions()
    assert after[0] - before[0] == 12 and after[1] - before[1] < 12  # some went together
    for _ in range(12):
        answers.append(await post(lone))
        answers.append(await post(capped))
        answers.append(await post(keyed, **{"Idempotency-Key": uuid.uuid4().hex}))
    assert [a.status_code for a in answers] == [200] * 48, [a.text for a in answers]

    written = [await what_was_written(db, team) for team in teams]
    assert len(written[0]["tasks"]) == 13 and len(written[0]["windows"]) == 1
    assert written[0]["ledger"][0]["count"] == 13
    assert all(w == written[0] for w in written[1:])
    report = await verify_ledger(db)
    assert report.ok, report
