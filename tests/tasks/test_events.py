"""GET /v1/tasks/{id}/events (server-sent events) and waiters that hang up, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse

from service.tasks.resources import Resources
from tests.factories import make_team, submit, task_body, wait_for, wait_terminal

pytestmark = pytest.mark.usefixtures("api_server")  # receives the simulator's callbacks


async def read_events(
    url: str, team: Any, task_id: str, *, last_event_id: str | None = None, limit: int = 100
) -> list[Any]:
    headers = dict(team.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(http, "GET", f"{url}/v1/tasks/{task_id}/events", headers=headers) as sse,
    ):
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        async for event in sse.aiter_sse():
            events.append(event)
            if len(events) >= limit:
                break
    return events


async def test_stream_follows_the_task_to_its_end(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, live_url: str
) -> None:
    # Processing lasts long enough to be seen however slowly the worker starts.
    await sim.put("/_sim/config", json={"queue_seconds": 0.3, "processing_seconds": 4})
    team = await make_team(client)
    task = await submit(client, team)
    start_worker()
    events = await read_events(live_url, team, task["task_id"])  # returns: the stream ended
    assert events[0].event == "queued" and events[-1].event == "completed"
    assert "processing" in [e.event for e in events]
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids))  # strictly increasing: nothing repeated
    final = json.loads(events[-1].data)
    assert final == (await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)).json()


async def test_resume_after_the_end_was_reached_while_no_one_listened(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, live_url: str
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    (first,) = await read_events(live_url, team, task["task_id"], limit=1)  # then hang up
    assert first.event == "queued"
    start_worker()
    await wait_terminal(client, team, task["task_id"])
    rest = await read_events(live_url, team, task["task_id"], last_event_id=first.id)
    assert [e.event for e in rest] == ["completed"]  # the missed end, once


async def test_resume_with_the_current_id_waits_for_the_next_change(
    client: httpx.AsyncClient, db: asyncpg.Connection, live_url: str
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    (first,) = await read_events(live_url, team, task["task_id"], limit=1)
    reading = asyncio.create_task(
        read_events(live_url, team, task["task_id"], last_event_id=first.id, limit=1)
    )
    # Whether the change lands before or after the stream connects, it must not be lost.
    await db.execute(
        "UPDATE tasks SET status = 'processing', progress = 40 WHERE id = $1", task["task_id"]
    )
    (moved,) = await asyncio.wait_for(reading, timeout=10)
    assert moved.event == "processing" and json.loads(moved.data)["progress"] == 40


async def test_idle_streams_get_keep_alive_comments(
    client: httpx.AsyncClient, res: Resources, live_url: str
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    original = res.settings
    res.settings = original.model_copy(update={"sse_keepalive_seconds": 0.2})
    try:
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream(
                "GET", f"{live_url}/v1/tasks/{task['task_id']}/events", headers=team.headers
            ) as response,
        ):
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith(":"):
                    break
        assert "event: queued" in lines and lines[-1].startswith(": ping")
    finally:
        res.settings = original


async def test_hanging_up_leaks_nothing_and_cancels_nothing(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, live_url: str
) -> None:
    assert res.notifications is not None
    team = await make_team(client)
    task = await submit(client, team)

    async def released() -> bool:
        return res.notifications is not None and res.notifications.waiting == 0

    await read_events(live_url, team, task["task_id"], limit=1)  # stream, then hang up
    await wait_for(released, timeout=10)

    async with httpx.AsyncClient(timeout=30) as http:  # a sync waiter that hangs up
        waiting = asyncio.create_task(
            http.post(f"{live_url}/v1/tasks/sync", json=task_body(), headers=team.headers)
        )

        async def holding() -> bool:
            admitted = await db.fetchval("SELECT count(*) FROM tasks")
            listener = res.notifications
            return admitted == 2 and listener is not None and listener.waiting == 1

        await wait_for(holding, timeout=10)
        waiting.cancel()

    await wait_for(released, timeout=10)
    statuses = await db.fetch("SELECT status FROM tasks")
    assert [r["status"] for r in statuses] == ["queued", "queued"]  # neither was cancelled


async def test_another_teams_task_is_404_and_no_key_is_401(
    client: httpx.AsyncClient, live_url: str
) -> None:
    owner, stranger = await make_team(client), await make_team(client)
    task = await submit(client, owner)
    async with httpx.AsyncClient() as http:
        url = f"{live_url}/v1/tasks/{task['task_id']}/events"
        assert (await http.get(url, headers=stranger.headers)).status_code == 404
        assert (await http.get(url)).status_code == 401


async def revoke_the_key(client: httpx.AsyncClient, team: Any) -> None:
    from tests.factories import ADMIN

    keys = await client.get(f"/admin/teams/{team.team['id']}/keys", headers=ADMIN)
    revoked = await client.delete(f"/admin/keys/{keys.json()['data'][0]['id']}", headers=ADMIN)
    assert revoked.status_code == 204


async def test_a_stream_ends_with_an_error_event_when_its_key_is_revoked(
    client: httpx.AsyncClient, live_url: str
) -> None:
    """Issue 31, point 7: a revoked key reads nothing more, not even on a stream it opened
    before (no worker runs: the task would stay queued and the stream open for ever)."""
    team = await make_team(client)
    task = await submit(client, team)
    url = f"{live_url}/v1/tasks/{task['task_id']}/events"
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(http, "GET", url, headers=team.headers) as sse,
    ):
        events = sse.aiter_sse()
        first = await anext(events)
        assert first.event == "queued"
        await revoke_the_key(client, team)

        async def the_rest() -> list[Any]:
            return [event async for event in events]

        rest = await asyncio.wait_for(the_rest(), timeout=10)  # the stream ended by itself
    assert [e.event for e in rest] == ["error"], rest
    error = json.loads(rest[-1].data)["error"]
    assert error["code"] == "unauthorized" and "revoked" in error["message"]


@pytest.mark.parametrize("route", ["prefer-wait", "sync"])
async def test_a_wait_ends_with_401_when_its_key_is_revoked(
    client: httpx.AsyncClient, res: Resources, live_url: str, route: str
) -> None:
    team = await make_team(client)
    if route == "sync":
        path, headers = "/v1/tasks/sync", team.headers
    else:
        path, headers = "/v1/tasks", {**team.headers, "Prefer": "wait=60"}
    waiters = res.notifications.waiting if res.notifications else 0

    async def wait() -> httpx.Response:
        async with httpx.AsyncClient(timeout=70) as http:
            return await http.post(f"{live_url}{path}", json=task_body(), headers=headers)

    waiting = asyncio.create_task(wait())

    async def admitted_and_waiting() -> bool:
        return bool(res.notifications and res.notifications.waiting > waiters)

    await wait_for(admitted_and_waiting, timeout=10)
    await revoke_the_key(client, team)
    answer = await waiting
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "revoked" in answer.json()["error"]["message"]
