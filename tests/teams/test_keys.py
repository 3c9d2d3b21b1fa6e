"""Key lifecycle: expiring keys, the key list with last use, never the key itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.factories import ADMIN, make_team, wait_for


async def test_keys_expire_and_say_so(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    team = await make_team(client)
    path = f"/admin/teams/{team.team['id']}/keys"
    later = datetime.now(UTC) + timedelta(days=7)
    dated = await client.post(path, json={"expires_at": later.isoformat()}, headers=ADMIN)
    assert dated.status_code == 201 and dated.json()["expires_at"].startswith(
        later.date().isoformat()
    )
    in_days = (await client.post(path, json={"expires_in_days": 2}, headers=ADMIN)).json()
    expires = datetime.fromisoformat(in_days["expires_at"])
    assert timedelta(days=1, hours=23) < expires - datetime.now(UTC) <= timedelta(days=2)
    for body, param in (
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": later.isoformat(), "expires_in_days": 3}, "expires_in_days"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ):
        refused = await client.post(path, json=body, headers=ADMIN)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, body

    key = {"Authorization": f"Bearer {in_days['key']}"}
    assert (await client.get("/v1/tasks", headers=key)).status_code == 200
    await db.execute(  # the key's time has come, set from outside the gateway
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
        in_days["id"],
    )

    async def refused() -> httpx.Response | None:  # the trigger's NOTIFY reaches the cache
        answer = await client.get("/v1/tasks", headers=key)
        return answer if answer.status_code == 401 else None

    expired = await wait_for(refused, timeout=10)
    assert expired.json()["error"]["message"].startswith("API key expired at 20")


async def test_the_key_list_shows_use_and_revocation_but_never_the_key(
    client: httpx.AsyncClient,
) -> None:
    team = await make_team(client)
    path = f"/admin/teams/{team.team['id']}/keys"
    spare = (await client.post(path, json={"name": "spare"}, headers=ADMIN)).json()
    before = (await client.get(path, headers=ADMIN)).json()["data"]
    assert [k["name"] for k in before] == ["default", "spare"]
    assert all(k["last_used_at"] is None and k["revoked_at"] is None for k in before)
    assert (await client.get("/v1/tasks", headers=team.headers)).status_code == 200
    await client.delete(f"/admin/keys/{spare['id']}", headers=ADMIN)
    after = {k["name"]: k for k in (await client.get(path, headers=ADMIN)).json()["data"]}
    assert after["default"]["last_used_at"] is not None  # moved on first use
    assert after["spare"]["revoked_at"] is not None and after["spare"]["last_used_at"] is None
    listing = str(after)
    assert team.key not in listing and spare["key"] not in listing and "hash" not in listing
    assert after["default"]["prefix"] == team.key[:12]
    missing = await client.get(
        "/admin/teams/00000000-0000-0000-0000-000000000000/keys", headers=ADMIN
    )
    assert missing.status_code == 404
