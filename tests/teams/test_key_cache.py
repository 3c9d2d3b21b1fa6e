"""The API process's cache of authenticated callers: used after a key's first request,
forgotten on any change to a key or team (in this process, another, or by hand in SQL),
and not trusted while the process cannot hear those changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from service.tasks.resources import Resources
from service.teams.service import hash_key
from tests.factories import ADMIN, make_team, task_body, wait_for


async def test_a_known_key_is_answered_from_the_cache_until_its_team_changes(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client, rpm_limit=50)
    key_hash = hash_key(team.key)
    assert res.keys.get(key_hash) is None
    first = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert first.status_code == 200 and ";q=50;" in first.headers["RateLimit-Policy"]
    known = res.keys.get(key_hash)
    assert known is not None and known.caller.rpm_limit == 50

    # Changed by hand, outside every gateway process: the trigger's NOTIFY is what tells it.
    await db.execute("UPDATE teams SET rpm_limit = 7 WHERE id = $1", team.team["id"])
    await wait_for(_forgotten(res, key_hash), timeout=10)
    after = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert after.status_code == 200 and ";q=7;" in after.headers["RateLimit-Policy"]


async def test_a_revoked_key_is_refused_by_the_very_next_request(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    assert (await client.get("/v1/tasks", headers=team.headers)).status_code == 200
    assert res.keys.get(hash_key(team.key)) is not None
    keys = await client.get(f"/admin/teams/{team.team['id']}/keys", headers=ADMIN)
    revoked = await client.delete(f"/admin/keys/{keys.json()['data'][0]['id']}", headers=ADMIN)
    assert revoked.status_code == 204
    refused = await client.get("/v1/tasks", headers=team.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "invalid or revoked API key"


async def test_while_the_listener_is_down_every_request_reads_the_database(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    key_hash = hash_key(team.key)
    assert (await client.get("/v1/tasks", headers=team.headers)).status_code == 200
    assert res.keys.get(key_hash) is not None
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN %qgw_auth_changes%'"
    )
    assert killed >= 1  # each in-process app of the session listens
    # Down, the cache keeps nothing: a revocation it could not hear still applies at once.
    await wait_for(_forgotten(res, key_hash), timeout=10)
    assert (await client.get("/v1/tasks", headers=team.headers)).status_code == 200

    # ...and once the listener is back, the key is cached again.
    async def cached_again() -> bool:
        await client.get("/v1/tasks", headers=team.headers)
        return res.keys.get(key_hash) is not None

    await wait_for(cached_again, timeout=20)


def _forgotten(res: Resources, key_hash: bytes) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return res.keys.get(key_hash) is None

    return probe
