"""A strange answer is not a reason to pay again (issue 15, point 3): a 200 with a task id
and an unknown status, a NaN progress or an absurd timestamp is recorded as submitted and
tracked; the oddity is logged and counted; reads of the same content do not loop."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import asyncpg
import httpx

from service.tasks import submission, tracking
from service.tasks.resources import Resources
from service.upstream.parse import UNKNOWN_STATUS, parse_time, parse_upstream_task
from tests.factories import claim, make_team, metric, row, sim_tasks, submit, wait_for


def test_parsing_names_each_oddity_and_never_raises() -> None:
    view = parse_upstream_task(
        {"status": "warming_up", "progress": math.nan, "created_at": 10**17, "start_time": -5}
    )
    assert view.status == UNKNOWN_STATUS and view.progress == 0 and view.start_time is None
    assert view.oddities == ("unknown_status", "bad_progress", "bad_time")
    plain = parse_upstream_task({"status": "processing", "progress": "45%", "created_at": 1.8e9})
    assert plain.oddities == () and plain.progress == 45
    assert parse_time(4_102_444_800) is None  # 2100-01-01: more than a year ahead
    assert parse_time(1_800_000_000_000) == datetime.fromtimestamp(1_800_000_000, tz=UTC)


async def test_a_strange_submit_answer_is_recorded_and_tracked_not_resent(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={"strange_answers": True, "queue_seconds": 1.5})
    before = {
        oddity: metric("qgw_upstream_odd_answers_total", operation="submit", oddity=oddity)
        for oddity in ("unknown_status", "bad_progress", "bad_time")
    }
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"
    for oddity, count in before.items():
        assert (
            metric("qgw_upstream_odd_answers_total", operation="submit", oddity=oddity) == count + 1
        )
    stored = await row(db, task["task_id"])
    assert stored["dispatch_state"] == "submitted" and stored["status"] == "queued"
    assert stored["progress"] == 0

    # Reads of the unfinished task are just as strange: recorded as a failed read, polled
    # again later, nothing changes and nothing crashes.
    reads = metric("qgw_upstream_odd_answers_total", operation="status", oddity="unknown_status")
    outcome = await tracking.refresh_from_upstream(
        res.pool, res.qingbo, res.settings, task["task_id"]
    )
    assert outcome == "upstream_error"
    assert (
        metric("qgw_upstream_odd_answers_total", operation="status", oddity="unknown_status")
        == reads + 1
    )
    assert (await row(db, task["task_id"]))["status"] == "queued"

    async def finished() -> str | None:  # Qingbo's terminal answers are plain
        done = await tracking.refresh_from_upstream(
            res.pool, res.qingbo, res.settings, task["task_id"]
        )
        return done if done == "completed" else None

    assert await wait_for(finished, timeout=15) == "completed"
    sent = await sim_tasks(sim)
    assert len(sent) == 1 and sent[0]["submissions"] == 1  # sent once, paid once
