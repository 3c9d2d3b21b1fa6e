"""The spend tests' history: a few hundred tasks admitted and finished across models, keys,
statuses, metadata values and a month boundary."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from service.platform.money import parse_usd
from service.tasks import settlement
from tests.factories import ADMIN, TeamKey, make_team, task_body

MODELS = ["minimax-hailuo-2.3", "minimax-hailuo-2.3-fast"]
PROJECTS = ["atlas", "zeus", None]


async def finish_as(db: asyncpg.Connection, task_id: str, status: str) -> None:
    """End a task the one way tasks end (settlement.finish), as the worker would."""
    async with db.transaction():
        done = await settlement.finish(db, task_id, status=status, from_states=("pending",))
    assert done is not None


async def second_key(client: httpx.AsyncClient, team: TeamKey) -> dict[str, str]:
    key = await client.post(
        f"/admin/teams/{team.team['id']}/keys", json={"name": "batch"}, headers=ADMIN
    )
    return {"Authorization": f"Bearer {key.json()['key']}"}


async def run_tasks(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    team: TeamKey,
    count: int,
    rng: random.Random,
    *,
    last_month: bool = False,
) -> Counter[tuple[str, str, str, str]]:
    """Admit and finish `count` tasks; micro-dollars spent by (status, model, key, project)."""
    batch = await second_key(client, team)
    spent: Counter[tuple[str, str, str, str]] = Counter()
    for i in range(count):
        model, project = rng.choice(MODELS), rng.choice(PROJECTS)
        body = task_body(model=model, duration=rng.choice([6, 10]))
        if project:
            body["metadata"] = {"project": project}
        key = "batch" if i % 3 == 0 else "default"
        answer = await client.post(
            "/v1/tasks", json=body, headers=batch if key == "batch" else team.headers
        )
        assert answer.status_code == 200, answer.text
        task = answer.json()
        if last_month:  # admitted two days before this month began
            await db.execute(
                "UPDATE tasks SET created_at = date_trunc('month', now()) - interval '2 days' "
                "WHERE id = $1",
                task["task_id"],
            )
        status = rng.choices(["completed", "failed", "cancelled"], [7, 2, 1])[0]
        await finish_as(db, task["task_id"], status)
        cost = parse_usd(task["cost_usd"]) if status == "completed" else 0
        spent[(status, model, key, project or "")] += cost
    return spent


@pytest.fixture
async def history(client: httpx.AsyncClient, db: asyncpg.Connection) -> dict[str, Any]:
    rng = random.Random(20261201)
    budgeted = await make_team(client)
    await client.put(
        f"/admin/teams/{budgeted.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "1000.00"}]},
        headers=ADMIN,
    )
    unbudgeted = await make_team(client)
    return {
        "budgeted": budgeted,
        "unbudgeted": unbudgeted,
        "spent": await run_tasks(client, db, budgeted, 260, rng),
        "this_month": await run_tasks(client, db, unbudgeted, 30, rng),
        "last_month": await run_tasks(client, db, unbudgeted, 30, rng, last_month=True),
    }
