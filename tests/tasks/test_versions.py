"""Answer versions (Qingbo-Version, the team's api_version) on submit, read, list, events,
webhooks and cancel; and Prefer: wait on POST /v1/tasks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from service.tasks.resources import Resources
from tests.factories import (
    ADMIN,
    TeamKey,
    make_team,
    start_ready_worker,
    submit,
    task_body,
    wait_for,
    wait_terminal,
)
from tests.prices import quota, usd
from tests.webhooks.receiver import running_receiver

pytestmark = pytest.mark.usefixtures("api_server")  # receives the simulator's callbacks
APRIL = {"Qingbo-Version": "2026-04"}
CURRENT = {"Qingbo-Version": "2026-09"}


def assert_april_shape(task: dict[str, Any]) -> None:
    assert isinstance(task["progress"], int) and task["created_at"] > 10**12
    assert "urls" not in task and "cost" not in task
    for video in (task.get("result") or {}).get("videos", []):
        assert isinstance(video["url"], str)


def assert_current_shape(task: dict[str, Any]) -> None:
    assert task["created_at"] < 10**12 and task["action"] == "generate"
    assert task["urls"]["get"].endswith(f"/v1/tasks/{task['task_id']}")
    assert task["urls"]["cancel"] == task["urls"]["get"] + "/cancel"
    for video in (task.get("result") or {}).get("videos", []):
        assert isinstance(video["url"], list)


async def get(client: httpx.AsyncClient, team: TeamKey, task_id: str, **headers: str) -> Any:
    answer = await client.get(f"/v1/tasks/{task_id}", headers={**team.headers, **headers})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_each_call_gets_the_shape_it_asks_for(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client, api_version="2026-09")
    assert team.team["api_version"] == "2026-09"
    start_worker()
    with running_receiver() as receiver:
        events = ["queued", "processing", "completed", "failed", "cancelled"]
        submitted = await client.post(
            "/v1/tasks",
            json=task_body(callback_url=receiver.url, callback_events=events),
            headers=team.headers,
        )
        task = submitted.json()
        # The team's default: the current shape; a submit answer still queued has integer 0.
        assert_current_shape(task)
        assert task["progress"] == 0 and task["pre_consumed_cost"] == quota()
        assert task["cost_usd"] == task["estimated_cost_usd"] == usd()
        done = await wait_terminal(client, team, task["task_id"])
        assert_current_shape(done)
        assert done["progress"] == "100%" and done["cost"] == quota()
        assert done["billing_status"] == "settled" and "pre_consumed_cost" not in done
        assert done["result"]["videos"][0]["url"][0].endswith(".mp4")

        april = await get(client, team, task["task_id"], **APRIL)
        assert_april_shape(april)
        assert april["progress"] == 100 and april["result"]["videos"][0]["url"].endswith(".mp4")
        assert april["cost_usd"] == done["cost_usd"]

        listed = await client.get("/v1/tasks", headers={**team.headers, **APRIL})
        assert_april_shape(listed.json()["data"][0])
        listed = await client.get("/v1/tasks", headers=team.headers)
        assert_current_shape(listed.json()["data"][0])

        async def delivered() -> bool:  # deliveries are independent: wait for both
            return {"queued", "completed"} <= set(receiver.events())

        await wait_for(delivered, timeout=20)
        for received in receiver.received:  # webhooks follow the team's version
            body = json.loads(received.body)
            assert_current_shape(body)
            assert body["event"] == body["status"] or body["event"] == "processing"
        bodies = {json.loads(r.body)["event"]: json.loads(r.body) for r in receiver.received}
        assert bodies["queued"]["progress"] == ""
        assert bodies["completed"]["progress"] == "100%" and bodies["completed"]["cost"] == quota()

    bad = await client.get(
        f"/v1/tasks/{task['task_id']}", headers={**team.headers, "Qingbo-Version": "2027-01"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Qingbo-Version"


async def test_the_team_default_is_2026_04_and_admin_can_change_it(
    client: httpx.AsyncClient,
) -> None:
    team = await make_team(client)
    assert team.team["api_version"] == "2026-04"
    task = await submit(client, team)
    assert_april_shape(task)
    assert "pre_consumed_cost" not in task
    assert_current_shape(await get(client, team, task["task_id"], **CURRENT))
    changed = await client.patch(
        f"/admin/teams/{team.team['id']}", json={"api_version": "2026-09"}, headers=ADMIN
    )
    assert changed.status_code == 200 and changed.json()["api_version"] == "2026-09"
    assert_current_shape(await get(client, team, task["task_id"]))
    for bad in ("2025-01", None):
        refused = await client.patch(
            f"/admin/teams/{team.team['id']}", json={"api_version": bad}, headers=ADMIN
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "api_version"


async def test_a_cancel_answer_says_what_was_refunded(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)  # not dispatched: cancelled at once
    cancelled = await client.post(
        f"/v1/tasks/{task['task_id']}/cancel", headers={**team.headers, **CURRENT}
    )
    body = cancelled.json()
    assert cancelled.status_code == 200 and body["status"] == "cancelled"
    assert body["refunded"] is True and body["refunded_quota"] == quota()
    assert body["cost"] == 0 and body["billing_status"] == "refunded"
    assert body["progress"] == "100%" and body["cost_usd"] == "0.00"
    assert body["estimated_cost_usd"] == usd()
    april = await get(client, team, task["task_id"], **APRIL)
    assert "refunded" not in april and april["cost_usd"] == "0.00"


async def test_the_event_stream_speaks_the_version_asked_for(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, live_url: str
) -> None:
    team = await make_team(client)
    start_worker()
    task = await submit(client, team)
    seen = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(
            http,
            "GET",
            f"{live_url}/v1/tasks/{task['task_id']}/events",
            headers={**team.headers, **CURRENT},
        ) as stream,
    ):
        async for event in stream.aiter_sse():
            seen.append(json.loads(event.data))
    assert seen[-1]["status"] == "completed" and seen[-1]["progress"] == "100%"
    for data in seen:
        assert_current_shape(data)
        assert isinstance(data["progress"], str)


async def test_prefer_wait_answers_the_finished_task(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, res: Resources
) -> None:
    team = await make_team(client, api_version="2026-09")
    await start_ready_worker(res, start_worker)
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 0.3})
    waited = await client.post(
        "/v1/tasks", json=task_body(), headers={**team.headers, "Prefer": "wait=30"}
    )
    assert waited.status_code == 200
    # Capped by QGW_SYNC_MAX_WAIT_SECONDS (3 s in the tests).
    assert waited.headers["preference-applied"] == "wait=3"
    body = waited.json()
    assert body["status"] == "completed" and body["cost"] == quota()
    assert body["pre_consumed_cost"] == quota()


async def test_prefer_wait_not_done_in_time_answers_the_state_so_far(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client, api_version="2026-09")
    start_worker()
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 60})
    early = await client.post(
        "/v1/tasks", json=task_body(), headers={**team.headers, "Prefer": "respond-async, wait=1"}
    )
    assert early.status_code == 200 and early.headers["preference-applied"] == "wait=1"
    assert early.json()["status"] in ("queued", "processing")
    assert early.json()["urls"]["get"].endswith(early.json()["task_id"])
    plain = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert "preference-applied" not in plain.headers
    bad = await client.post(
        "/v1/tasks", json=task_body(), headers={**team.headers, "Prefer": "wait=soon"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Prefer"
