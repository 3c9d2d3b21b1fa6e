"""POST /v1/tasks/sync: waits on change notifications (LISTEN/NOTIFY), bounded by a timeout."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from service.tasks.resources import Resources
from tests.factories import make_team, start_ready_worker, submit, task_body, wait_for

pytestmark = pytest.mark.usefixtures("api_server")  # receives the simulator's callbacks


async def test_sync_answers_the_finished_task(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, res: Resources
) -> None:
    await start_ready_worker(res, start_worker)
    team = await make_team(client)
    headers = {**team.headers, "Idempotency-Key": "sync-1"}
    body = task_body()
    done = await client.post("/v1/tasks/sync", json=body, headers=headers, timeout=30)
    assert done.status_code == 200, done.text
    task = done.json()
    assert task["status"] == "completed" and task["result"]["videos"]
    assert "poll_url" not in task
    again = await client.post("/v1/tasks/sync", json=body, headers=headers, timeout=30)
    assert again.json()["task_id"] == task["task_id"]  # idempotent like POST /v1/tasks
    assert len((await sim.get("/_sim/tasks")).json()["tasks"]) == 1
    assert res.notifications is not None
    assert res.notifications.waiting == 0  # no subscription leaked


async def test_sync_times_out_with_a_poll_url(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    await sim.put("/_sim/config", json={"processing_seconds": 60})
    start_worker()
    team = await make_team(client)
    answer = await client.post(
        "/v1/tasks/sync", params={"timeout": 0.5}, json=task_body(), headers=team.headers
    )
    task = answer.json()
    assert answer.status_code == 200 and task["status"] in ("queued", "processing")
    assert task["poll_url"] == f"http://gateway/v1/tasks/{task['task_id']}"
    assert (await client.get(task["poll_url"], headers=team.headers)).status_code == 200


async def test_sync_validates_like_submit(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    bad = await client.post("/v1/tasks/sync", json=task_body(duration=7), headers=team.headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "duration"
    assert (await client.post("/v1/tasks/sync", json=task_body())).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0


async def test_a_committed_change_wakes_only_that_tasks_waiters(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    assert res.notifications is not None
    team = await make_team(client)
    watched, other = await submit(client, team), await submit(client, team)
    with (
        res.notifications.subscribe(watched["task_id"]) as changed,
        res.notifications.subscribe(other["task_id"]) as untouched,
    ):
        await db.execute("UPDATE tasks SET progress = 5 WHERE id = $1", watched["task_id"])

        async def woke() -> bool:
            return changed.is_set()

        await wait_for(woke, timeout=5)
        assert not untouched.is_set()
        assert res.notifications.waiting == 2
    assert res.notifications.waiting == 0
