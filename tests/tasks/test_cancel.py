"""Cancel holds no database connection across its call to Qingbo (issue 15, point 6), and
believes Qingbo's 2xx only once a read shows the task cancelled (point 12)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from service.tasks import submission
from service.tasks.resources import Resources
from tests.factories import claim, make_team, metric, row, submit, wait_for


async def submitted_task(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, team: object
) -> str:
    task = await submit(client, team)  # type: ignore[arg-type]
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"
    return str(task["task_id"])


async def test_slow_cancels_do_not_hold_connections_from_other_teams_reads(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 600})
    busy, other = await make_team(client), await make_team(client)
    theirs = await submit(client, other)
    assert res.settings.db_pool_max_size <= 20  # 20 cancels would hold the whole pool
    tasks = [await submitted_task(client, res, db, busy) for _ in range(20)]
    await sim.put("/_sim/config", json={"latency_ms": 10_000})

    cancels = [
        asyncio.create_task(client.post(f"/v1/tasks/{t}/cancel", headers=busy.headers))
        for t in tasks
    ]

    async def all_waiting_on_qingbo() -> bool:
        return metric("qgw_upstream_requests_in_flight", operation="cancel") == 20

    await wait_for(all_waiting_on_qingbo, timeout=5)
    read = await client.get(f"/v1/tasks/{theirs['task_id']}", headers=other.headers)
    assert read.status_code == 200
    # The other team's read was served while every cancel was still waiting on Qingbo.
    assert not any(c.done() for c in cancels)
    answers = await asyncio.gather(*cancels)
    # The gateway's 2 s upstream timeout ends them: 503, and the tasks are still tracked.
    assert {a.status_code for a in answers} == {503}
    assert (await row(db, tasks[0]))["dispatch_state"] == "submitted"


async def test_a_2xx_cancel_is_believed_only_after_a_read_shows_it(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 600, "cancel_ignored": True})
    team = await make_team(client)
    task_id = await submitted_task(client, res, db, team)
    refused = await client.post(f"/v1/tasks/{task_id}/cancel", headers=team.headers)
    assert refused.status_code == 409 and refused.headers["retry-after"] == "1"
    assert "still reads as queued" in refused.json()["error"]["message"]
    kept = await row(db, task_id)
    assert kept["dispatch_state"] == "submitted" and kept["status"] == "queued"

    await sim.put("/_sim/config", json={"cancel_ignored": False})
    done = await client.post(f"/v1/tasks/{task_id}/cancel", headers=team.headers)
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert (await row(db, task_id))["charged_micros"] == 0
