"""Tracking reads tasks back to their end: completed and failed, a 404 read again before it
is believed, the tracking deadline whatever Qingbo's reads return, and a late answer
after it counted."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
import httpx
import pytest

from service.tasks import submission, tracking
from service.tasks.resources import Resources
from tests.factories import ADMIN, claim, make_team, metric, row, sim_tasks, submit, wait_for

pytestmark = pytest.mark.usefixtures("api_server")  # receives the simulator's callbacks


def late_answers(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("qgw_upstream_late_answers_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("fault", ["http_5xx_rate", "http_429_rate"])
async def test_failing_reads_cannot_keep_a_task_forever(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    api_server: str,
    fault: str,
) -> None:
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "5.00"}]},
        headers=ADMIN,
    )
    await sim.put("/_sim/config", json={"queue_seconds": 0.2, "processing_seconds": 1.5})
    task = await submit(client, team)
    assert await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"])) == (
        "submitted"
    )
    await sim.put("/_sim/config", json={fault: 1.0})  # every read fails from now on
    impatient = dataclasses.replace(
        res, settings=res.settings.model_copy(update={"task_max_tracking_seconds": 0.3})
    )
    async with httpx.AsyncClient() as http:
        before = late_answers((await http.get(f"{api_server}/metrics")).text)

    async def refreshed() -> str | None:
        outcome = await tracking.refresh_from_upstream(
            res.pool, impatient.qingbo, impatient.settings, task["task_id"]
        )
        return outcome if outcome == "timed_out" else None

    assert await wait_for(refreshed, timeout=10) == "timed_out"
    row = await db.fetchrow("SELECT * FROM tasks WHERE id = $1", task["task_id"])
    assert row["status"] == "failed" and row["dispatch_state"] == "done"
    assert row["error"]["code"] == "upstream_timeout" and "last read" in row["error"]["message"]
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert usage["budgets"][0]["reserved_usd"] == "0.00" and usage["active_tasks"] == 0
    in_flight = await db.fetchval(
        "SELECT count(*) FROM tasks WHERE dispatch_state IN ('claimed', 'submitting', 'submitted')"
    )
    assert in_flight == 0

    # Qingbo finishes the task and calls back: counted as a late answer, the task stays failed.
    async def counted() -> float:
        async with httpx.AsyncClient() as http:
            value = late_answers((await http.get(f"{api_server}/metrics")).text)
        return value if value > before else 0.0

    await wait_for(counted, timeout=15)
    still = await db.fetchrow("SELECT status FROM tasks WHERE id = $1", task["task_id"])
    assert still["status"] == "failed"


async def test_tracking_reaches_completed_and_failed(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    ok, bad = await submit(client, team), await submit(client, team)
    await submission.submit(res, ok["task_id"], await claim(res, db, ok["task_id"]))
    await sim.put("/_sim/config", json={"fail_rate": 1.0})
    await submission.submit(res, bad["task_id"], await claim(res, db, bad["task_id"]))

    async def refreshed(task_id: str) -> str | None:
        outcome = await tracking.refresh_from_upstream(res.pool, res.qingbo, res.settings, task_id)
        return outcome if outcome in ("completed", "failed") else None

    assert await wait_for(lambda: refreshed(ok["task_id"]), timeout=10) == "completed"
    assert await wait_for(lambda: refreshed(bad["task_id"]), timeout=10) == "failed"
    done = (await client.get(f"/v1/tasks/{ok['task_id']}", headers=team.headers)).json()
    assert done["progress"] == 100 and done["result"]["videos"][0]["url"].endswith(".mp4")
    assert done["start_time"] > 1_700_000_000_000 and done["completed_at"] >= done["start_time"]
    failed = (await client.get(f"/v1/tasks/{bad['task_id']}", headers=team.headers)).json()
    assert failed["error"]["code"] in ("generation_failed", "task_failed")


async def test_a_task_unknown_upstream_is_read_again_then_fails(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"]))
    await db.execute(
        "UPDATE tasks SET upstream_task_id = 'task-gone' WHERE id = $1", task["task_id"]
    )
    # Moments after Qingbo accepted it, a 404 may be its store catching up: read again.
    before = metric("qgw_upstream_transient_not_found_total")
    assert (
        await tracking.refresh_from_upstream(res.pool, res.qingbo, res.settings, task["task_id"])
        == "not_found_yet"
    )
    assert metric("qgw_upstream_transient_not_found_total") == before + 1
    young = await row(db, task["task_id"])
    assert young["dispatch_state"] == "submitted" and young["next_poll_at"] > young["updated_at"]
    # Past the grace period a 404 is believed.
    await db.execute(
        "UPDATE tasks SET submitted_at = now() - make_interval(secs => $2) WHERE id = $1",
        task["task_id"],
        tracking.NOT_FOUND_GRACE_SECONDS + 1,
    )
    assert (
        await tracking.refresh_from_upstream(res.pool, res.qingbo, res.settings, task["task_id"])
        == "failed"
    )
    assert (await row(db, task["task_id"]))["error"]["code"] in ("not_found", "task_not_found")


# Production's pace of polls, long enough that only the read backoff sees an end soon.
SLOW_POLLS = {  # far enough apart that only callbacks and the read retry see an end
    "poll_initial_seconds_with_callbacks": 300.0,
    "poll_max_seconds_with_callbacks": 600.0,
    "poll_lease_seconds": 30.0,
}
READ_BACKOFF = {  # the defaults
    "poll_retry_base_seconds": 0.5,
    "poll_retry_max_seconds": 2.0,
    "poll_retry_after_max_seconds": 10.0,
}


async def test_in_a_storm_failed_reads_are_retried_soon_and_every_end_is_seen(
    client: httpx.AsyncClient, db: asyncpg.Connection, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    """Issue 31 point 10: Qingbo answers 40 % 429 and 30 % 5xx to submits and reads alike.
    A failed read is read again within the read backoff (read from the schedule in the
    database), never at the next poll a minute away; so every end Qingbo reached is seen
    by the gateway soon after (nobody looks at the tasks: no watched pace helps)."""
    await sim.put("/_sim/config", json={"queue_seconds": 0.5, "processing_seconds": 2.0})
    team = await make_team(client)
    start_worker(**SLOW_POLLS, **READ_BACKOFF)
    await sim.put("/_sim/config", json={"http_429_rate": 0.4, "http_5xx_rate": 0.3})
    ids = [(await submit(client, team))["task_id"] for _ in range(8)]
    bound = max(
        READ_BACKOFF["poll_retry_max_seconds"], READ_BACKOFF["poll_retry_after_max_seconds"]
    )
    failures_seen = 0

    async def schedule_after_failures_is_soon() -> bool:
        """One look at the schedule: every task whose last read failed (and that is not
        being read now) is due again within the bound. True once every task ended."""
        nonlocal failures_seen
        rows = await db.fetch(
            """
            SELECT id, dispatch_state, read_failures,
                   next_poll_at - now() <= make_interval(secs => $2) AS soon,
                   coalesce(poll_leased_until > now(), false) AS being_read
            FROM tasks WHERE id = ANY($1::text[])
            """,
            ids,
            bound,
        )
        for task in rows:
            if task["dispatch_state"] == "submitted" and task["read_failures"] > 0:
                failures_seen += 1
                assert task["soon"] or task["being_read"], dict(task)
        return all(task["dispatch_state"] == "done" for task in rows)

    async def ended_at_qingbo() -> bool:
        tasks = await sim_tasks(sim)
        return len(tasks) == len(ids) and all(t["status"] == "completed" for t in tasks)

    await wait_for(ended_at_qingbo, timeout=60)
    # From Qingbo's last end, the gateway sees every end soon: at 70 % failed reads, a retry
    # every 1-2 s gives each end about 20 tries in 45 s, so one of eight ends stays unseen
    # about one run in a thousand (with 5 s retries and 30 s it was one run in three).
    await wait_for(schedule_after_failures_is_soon, timeout=45, interval=0.05)
    assert failures_seen > 0  # reads did fail: the storm was real
    statuses = await db.fetch("SELECT status, read_failures FROM tasks WHERE id = ANY($1)", ids)
    assert {r["status"] for r in statuses} == {"completed"}
