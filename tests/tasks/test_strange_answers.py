"""A strange answer is not a reason to pay again (issue 15, point 3): a 200 with a task id
and an unknown status, a NaN progress or an absurd timestamp is recorded as submitted and
tracked; the oddity is logged and counted; reads of the same content do not loop."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from service.budgets.service import verify_ledger
from service.platform.money import parse_usd
from service.tasks import submission, tracking
from service.tasks.resources import Resources
from service.upstream.parse import UNKNOWN_STATUS, parse_time, parse_upstream_task
from tests.factories import (
    ADMIN,
    TeamKey,
    claim,
    make_team,
    metric,
    row,
    sim_tasks,
    submit,
    variant,
    wait_for,
    wait_terminal,
)


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


def nul_free(value: Any) -> bool:
    return "\\u0000" not in orjson.dumps(value).decode() and "\x00" not in str(value)


async def settled_without_holding(
    client: httpx.AsyncClient, db: asyncpg.Connection, team: TeamKey
) -> None:
    """Nothing of the team's is reserved any more, and the ledger balances."""
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert all(parse_usd(b["reserved_usd"]) == 0 for b in usage["budgets"]), usage
    report = await verify_ledger(db)
    assert report.ok, report


ODD_ANSWERS = {
    "nul_in_error": ({"error": {"message": "boom\u0000 at the edge"}}, 1.0),
    "nul_in_urls_and_images": (
        {
            "result": {
                "images": ["https://img.example/\u0000a.png", "\u0001"],
                "videos": [{"url": ["https://cdn.example/v\u0000.mp4"], "expires_at": 4e9}],
            }
        },
        0.0,
    ),
    "cost_beyond_bigint": ({"cost": 5e18}, 0.0),
    # Today's regex took seconds per kB squared on this (1.7 s at 20 kB; 60 kB: a minute).
    "progress_of_60_kb": ({"progress": "1" + " " * 60_000 + "x"}, 0.0),
}


@pytest.mark.usefixtures("api_server")
@pytest.mark.parametrize("odd", list(ODD_ANSWERS))
async def test_no_terminal_answer_can_keep_a_task_or_its_money(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    start_worker: Any,
    odd: str,
) -> None:
    """Real tasks through a real worker, the simulator's terminal answers made odd: each
    task ends with clean data, or fails with its reservation released; the ledger balances;
    and the worker's loop kept up (the other tasks ended in the same deadline)."""
    patch, fail_rate = ODD_ANSWERS[odd]
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "total", "limit_usd": "5.00"}]},
        headers=ADMIN,
    )
    await sim.put("/_sim/config", json={"terminal_patch": patch, "fail_rate": fail_rate})
    start_worker()
    tasks = [await submit(client, team) for _ in range(3)]
    ended = [await wait_terminal(client, team, t["task_id"], timeout=30) for t in tasks]
    for task in ended:
        stored = await row(db, task["task_id"])
        assert stored["dispatch_state"] == "done"
        assert task["status"] == ("failed" if fail_rate else "completed"), task
        assert nul_free(stored["result"]) and nul_free(stored["error"]) and nul_free(task)
    if odd == "nul_in_error":
        assert ended[0]["error"]["message"] == "boom at the edge"
    if odd == "nul_in_urls_and_images":
        result = (await row(db, ended[0]["task_id"]))["result"]
        assert result["images"] == ["https://img.example/a.png"]
        assert result["videos"][0]["url"] == ["https://cdn.example/v.mp4"]
    await settled_without_holding(client, db, team)


async def test_an_answer_that_cannot_be_recorded_ends_the_task_and_frees_its_money(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    """The backstop behind the cleaning: Postgres refusing a task's terminal answer (here a
    constraint refuses its completion, for real) is tried QGW_UPSTREAM_ANSWER_MAX_RECORD_TRIES
    reads, then the task fails `upstream_answer_unrecordable`: reservation released, slot
    free, counted."""
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "5.00"}]},
        headers=ADMIN,
    )
    task = await submit(client, team)
    task_id = task["task_id"]
    attempt = await claim(res, db, task_id)
    assert await submission.submit(res, task_id, attempt) == "submitted"
    tries = variant(res, upstream_answer_max_record_tries=2)
    counted = metric("qgw_tasks_unrecordable_total", model="minimax-hailuo-2.3", family="hailuo")
    await db.execute(
        "ALTER TABLE tasks ADD CONSTRAINT test_refuses_completion "
        f"CHECK (id <> '{task_id}' OR status <> 'completed') NOT VALID"
    )
    try:

        async def first_refusal() -> str | None:
            outcome = await tracking.refresh_from_upstream(
                tries.pool, tries.qingbo, tries.settings, task_id
            )
            return outcome if outcome == "unrecordable" else None

        assert await wait_for(first_refusal, timeout=15) == "unrecordable"
        assert (await row(db, task_id))["dispatch_state"] == "submitted"  # read again later
        outcome = await tracking.refresh_from_upstream(
            tries.pool, tries.qingbo, tries.settings, task_id
        )
    finally:
        await db.execute("ALTER TABLE tasks DROP CONSTRAINT test_refuses_completion")
    assert outcome == "failed"
    stored = await row(db, task_id)
    assert stored["status"] == "failed" and stored["dispatch_state"] == "done"
    assert stored["error"]["code"] == "upstream_answer_unrecordable"
    assert stored["charged_micros"] == 0
    assert (
        metric("qgw_tasks_unrecordable_total", model="minimax-hailuo-2.3", family="hailuo")
        == counted + 1
    )
    await settled_without_holding(client, db, team)


async def test_past_its_tracking_deadline_an_unrecordable_answer_ends_the_task_at_once(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    """Tries left do not matter once the task is past QGW_TASK_MAX_TRACKING_SECONDS: the
    first answer that cannot be recorded ends it, refunded."""
    team = await make_team(client)
    task_id = (await submit(client, team))["task_id"]
    assert await submission.submit(res, task_id, await claim(res, db, task_id)) == "submitted"

    async def ended_at_qingbo() -> bool:
        return any(t["status"] == "completed" for t in await sim_tasks(sim))

    await wait_for(ended_at_qingbo, timeout=15)
    late = variant(res, upstream_answer_max_record_tries=100, task_max_tracking_seconds=0.01)
    await db.execute(
        "ALTER TABLE tasks ADD CONSTRAINT test_refuses_completion "
        f"CHECK (id <> '{task_id}' OR status <> 'completed') NOT VALID"
    )
    try:
        outcome = await tracking.refresh_from_upstream(
            late.pool, late.qingbo, late.settings, task_id
        )
    finally:
        await db.execute("ALTER TABLE tasks DROP CONSTRAINT test_refuses_completion")
    assert outcome == "failed"
    stored = await row(db, task_id)
    assert stored["error"]["code"] == "upstream_answer_unrecordable"
    assert stored["record_failures"] == 1 and stored["dispatch_state"] == "done"
    await settled_without_holding(client, db, team)
