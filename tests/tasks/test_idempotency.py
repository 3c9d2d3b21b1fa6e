"""Idempotent retries win over limits (issue 15, point 8): a bound Idempotency-Key replays
before any rate limit, budget or concurrency check, and concurrent requests with one key
get the one task even when only one fits."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.factories import ADMIN, make_team, task_body
from tests.prices import usd


async def test_ten_at_once_against_a_budget_for_one_get_the_one_task(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": usd()}]},  # one task's price
        headers=ADMIN,
    )
    body, headers = task_body(), {**team.headers, "Idempotency-Key": "render-42"}
    answers = await asyncio.gather(
        *(client.post("/v1/tasks", json=body, headers=headers) for _ in range(10))
    )
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert len({a.json()["task_id"] for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM tasks") == 1
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert usage["budgets"][0]["reserved_usd"] == usd()  # reserved once


async def test_a_bound_key_replays_past_rate_limit_budget_and_cap(
    client: httpx.AsyncClient,
) -> None:
    team = await make_team(client, rpm_limit=1, max_concurrent_tasks=1)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": usd()}]},
        headers=ADMIN,
    )
    body, keyed = task_body(), {**team.headers, "Idempotency-Key": "render-43"}
    first = await client.post("/v1/tasks", json=body, headers=keyed)
    assert first.status_code == 200, first.text
    other = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert other.status_code == 429  # the minute's one submission is spent
    for _ in range(3):  # and the budget and the concurrency cap are full too
        again = await client.post("/v1/tasks", json=body, headers=keyed)
        assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"]
    conflict = await client.post("/v1/tasks", json=task_body(), headers=keyed)
    assert conflict.status_code == 409  # another body under the key is still refused
