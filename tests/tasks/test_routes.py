"""The task API: answers, idempotency, team isolation, listing, cancel before submission."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.conftest import UPSTREAM_VERSION
from tests.factories import make_team, submit, task_body
from tests.prices import usd


async def test_submit_answers_qingbo_shape_plus_gateway_fields(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    task = await submit(client, team, duration=10)
    for field in ("task_id", "model", "action", "status", "created_at", "progress"):
        assert field in task
    assert task["created_at"] > 1_700_000_000_000  # milliseconds
    assert task["cost_usd"] == usd("768p_10s") and task["team_id"] == team.team["id"]
    got = await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)
    assert got.json() == task


async def test_idempotency_key_replays_same_body_and_rejects_another(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    headers = {**team.headers, "Idempotency-Key": "order-42"}
    body = task_body()
    first = await client.post("/v1/tasks", json=body, headers=headers)
    again = await client.post("/v1/tasks", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["task_id"] == again.json()["task_id"]
    other = await client.post("/v1/tasks", json={**body, "duration": 10}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert await db.fetchval("SELECT count(*) FROM tasks") == 1

    # Another team may use the same key for its own task.
    stranger = await make_team(client)
    theirs = await client.post(
        "/v1/tasks", json=body, headers={**stranger.headers, "Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 200 and theirs.json()["task_id"] != first.json()["task_id"]


async def test_concurrent_requests_with_one_idempotency_key_make_one_task(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    headers = {**team.headers, "Idempotency-Key": "burst"}
    body = task_body()
    answers = await asyncio.gather(
        *(client.post("/v1/tasks", json=body, headers=headers) for _ in range(20))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["task_id"] for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM tasks") == 1


async def test_expired_idempotency_key_is_free_again(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    headers = {**team.headers, "Idempotency-Key": "old"}
    first = await client.post("/v1/tasks", json=task_body(), headers=headers)
    await db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    second = await client.post("/v1/tasks", json=task_body(duration=10), headers=headers)
    assert second.status_code == 200 and second.json()["task_id"] != first.json()["task_id"]


async def test_teams_cannot_see_each_others_tasks(client: httpx.AsyncClient) -> None:
    alice, bob = await make_team(client), await make_team(client)
    task = await submit(client, alice)
    for method, path in (
        ("GET", f"/v1/tasks/{task['task_id']}"),
        ("POST", f"/v1/tasks/{task['task_id']}/cancel"),
    ):
        answer = await client.request(method, path, headers=bob.headers)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    listed = await client.get("/v1/tasks", headers=bob.headers)
    assert listed.json()["data"] == []
    still = await client.get(f"/v1/tasks/{task['task_id']}", headers=alice.headers)
    assert still.json()["status"] == "queued"


async def test_listing_filters_and_paginates_newest_first(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    ids = [(await submit(client, team))["task_id"] for _ in range(5)]
    fast = await submit(client, team, model="minimax-hailuo-2.3-fast")
    await client.post(f"/v1/tasks/{ids[0]}/cancel", headers=team.headers)

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/tasks", params=params, headers=team.headers)).json()
        seen += [t["task_id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [fast["task_id"], *reversed(ids)]

    by_model = (
        await client.get(
            "/v1/tasks", params={"model": "minimax-hailuo-2.3-fast"}, headers=team.headers
        )
    ).json()
    assert [t["task_id"] for t in by_model["data"]] == [fast["task_id"]]
    cancelled = (
        await client.get("/v1/tasks", params={"status": "cancelled"}, headers=team.headers)
    ).json()
    assert [t["task_id"] for t in cancelled["data"]] == [ids[0]]
    bad = await client.get("/v1/tasks", params={"status": "done"}, headers=team.headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    nul = await client.get("/v1/tasks", params={"model": "a\x00"}, headers=team.headers)
    assert nul.status_code == 400 and nul.json()["error"]["param"] == "model"
    bad_cursor = await client.get("/v1/tasks", params={"cursor": "garbage"}, headers=team.headers)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["param"] == "cursor"


async def test_cancel_before_submission_is_immediate_and_final(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    cancelled = await client.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["completed_at"] is not None
    again = await client.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    unknown = await client.post("/v1/tasks/task-nope/cancel", headers=team.headers)
    assert unknown.status_code == 404


async def test_unknown_routes_and_methods_use_the_envelope(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await client.delete("/v1/tasks")
    assert wrong.status_code == 405 and "error" in wrong.json()


async def test_the_list_filters_by_model_family(client: httpx.AsyncClient) -> None:
    """`?family=` narrows the list to the family's models (as the catalog in force names
    them); an unknown family is a 400 naming it."""
    team = await make_team(client)
    hailuo = await submit(client, team)
    others: list[str] = []
    if UPSTREAM_VERSION == "2026-09":  # the other families exist in the current generation
        body = {"model": "vidu-q3", "prompt": "forest run", "duration": 5, "resolution": "1080p"}
        body["image_urls"] = ["https://cdn.example.com/c.jpg"]
        answer = await client.post("/v1/tasks", json=body, headers=team.headers)
        assert answer.status_code == 200, answer.text
        others.append(answer.json()["task_id"])

    async def listed(**params: str) -> list[str]:
        answer = await client.get("/v1/tasks", params=params, headers=team.headers)
        assert answer.status_code == 200, answer.text
        return [t["task_id"] for t in answer.json()["data"]]

    assert await listed(family="hailuo") == [hailuo["task_id"]]
    assert await listed(family="vidu") == others
    assert set(await listed()) == {hailuo["task_id"], *others}
    unknown = await client.get("/v1/tasks", params={"family": "nope"}, headers=team.headers)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "family"
