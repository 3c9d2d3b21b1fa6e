"""The API process's cache of authenticated callers: used after a key's first request,
forgotten on any change to a key or team (in this process, another, or by hand in SQL),
and not trusted while the process cannot hear those changes."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from service.app import create_app
from service.config import Settings
from service.platform.db import migrate
from service.tasks.notifications import LISTENER_NAME
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
        "WHERE datname = current_database() AND application_name = $1",
        LISTENER_NAME,
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


class PrivatePostgres:
    """A Postgres of this test's own (pgserver), so one of its backends can be stopped."""

    def __init__(self) -> None:
        import pgserver

        self.server = pgserver.get_server(
            tempfile.mkdtemp(prefix="qgw-pg-listener-"), cleanup_mode="delete"
        )
        self.url = self.server.get_uri()


async def test_a_silently_half_open_listener_stops_the_cache_being_trusted(
    settings: Settings,
) -> None:
    """Issue 31, point 7: the listener's backend is frozen (SIGSTOP): its socket stays open
    and says nothing, so no change is heard. The listener's own NOTIFY round trip fails
    within its bound, the cache stops being trusted, and a key revoked meanwhile is
    refused, long before the cache's TTL."""
    pg = await asyncio.to_thread(PrivatePostgres)
    try:
        await asyncio.to_thread(migrate, pg.url)
        stack = settings.model_copy(
            update={
                "database_url": pg.url,
                "arq_queue_name": f"{settings.arq_queue_name}-listener",
                "listener_check_seconds": 0.5,
            }
        )
        app = create_app(stack)
        async with app.router.lifespan_context(app):
            res: Resources = app.state.resources
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                await frozen_listener_then_revoke(client, res, pg.url)
    finally:
        await asyncio.to_thread(pg.server.cleanup)


async def frozen_listener_then_revoke(client: httpx.AsyncClient, res: Resources, url: str) -> None:
    team = await make_team(client)
    assert (await client.get("/v1/tasks", headers=team.headers)).status_code == 200
    assert res.keys.get(hash_key(team.key)) is not None  # trusted, cached
    admin = await asyncpg.connect(url)
    try:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", LISTENER_NAME
        )
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            # Revoked elsewhere (another replica, or by hand): only the NOTIFY tells this one.
            revoked = await admin.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE team_id = $1", team.team["id"]
            )
            assert revoked == "UPDATE 1"

            async def refused() -> bool:
                answer = await client.get("/v1/tasks", headers=team.headers)
                return answer.status_code == 401

            # The cache's TTL is 60 s: only the round trip's failure ends its trust sooner.
            await wait_for(refused, timeout=10)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await admin.close()
