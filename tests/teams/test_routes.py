"""Admin: teams and keys; keys are shown once and stored only hashed; auth everywhere."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import httpx

from tests.factories import ADMIN, make_team, task_body


async def test_team_lifecycle(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/admin/teams",
        json={
            "name": "video-lab",
            "rpm_limit": 60,
            "max_concurrent_tasks": 5,
            "allowed_models": ["minimax-hailuo-2.3-fast"],
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    team = created.json()
    assert team["webhook_secret"].startswith("whsec_")
    assert (team["rpm_limit"], team["max_concurrent_tasks"]) == (60, 5)

    listed = (await client.get("/admin/teams", headers=ADMIN)).json()["data"]
    assert team["id"] in [t["id"] for t in listed]
    patched = await client.patch(
        f"/admin/teams/{team['id']}",
        json={"rpm_limit": None, "max_concurrent_tasks": 9},
        headers=ADMIN,
    )
    assert patched.status_code == 200
    assert (patched.json()["rpm_limit"], patched.json()["max_concurrent_tasks"]) == (None, 9)
    assert patched.json()["allowed_models"] == ["minimax-hailuo-2.3-fast"]
    got = await client.get(f"/admin/teams/{team['id']}", headers=ADMIN)
    assert got.json()["max_concurrent_tasks"] == 9

    duplicate = await client.post("/admin/teams", json={"name": "video-lab"}, headers=ADMIN)
    assert duplicate.status_code == 400 and duplicate.json()["error"]["param"] == "name"


async def test_admin_errors(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/teams")).status_code == 401
    wrong = await client.get("/admin/teams", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    missing = await client.get("/admin/teams/00000000-0000-0000-0000-000000000000", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = await client.post(
        "/admin/teams", json={"name": "x", "allowed_models": ["sora"]}, headers=ADMIN
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "allowed_models[0]"
    bad_limit = await client.post("/admin/teams", json={"name": "y", "rpm_limit": 0}, headers=ADMIN)
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "rpm_limit"


async def test_keys_are_hashed_shown_once_and_revocable(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    assert team.key.startswith("qgw_") and len(team.key) > 40
    stored = await db.fetch(
        "SELECT prefix, key_hash FROM api_keys WHERE team_id = $1", UUID(team.team["id"])
    )
    assert len(stored) == 1
    assert team.key[:12] == stored[0]["prefix"]
    assert team.key.encode() not in bytes(stored[0]["key_hash"])
    assert (await client.get("/v1/models", headers=team.headers)).status_code == 200

    issued = await client.post(
        f"/admin/teams/{team.team['id']}/keys", json={"name": "ci"}, headers=ADMIN
    )
    second = issued.json()
    assert second["name"] == "ci" and second["prefix"] == second["key"][:12]
    revoked = await client.delete(f"/admin/keys/{second['id']}", headers=ADMIN)
    assert revoked.status_code == 204
    denied = await client.get("/v1/models", headers={"Authorization": f"Bearer {second['key']}"})
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
    assert (await client.get("/v1/models", headers=team.headers)).status_code == 200


async def test_public_api_requires_a_key(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer qgw_unknown"}, {"Authorization": "Basic abc"}):
        answer = await client.post("/v1/tasks", json=task_body(), headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"


async def test_model_allow_list_is_403(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    team = await make_team(client, allowed_models=["minimax-hailuo-2.3-fast"])
    denied = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    allowed = await client.post(
        "/v1/tasks", json=task_body(model="minimax-hailuo-2.3-fast"), headers=team.headers
    )
    assert allowed.status_code == 200
