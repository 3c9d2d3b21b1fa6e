"""Requests-per-minute limits in real Redis, and what happens when Redis is gone."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from service.catalog.schemas import TaskRequest
from service.cli.dev import free_port
from service.platform.db import OnDemandConnection
from service.platform.errors import ConcurrencyLimited, UpstreamUnavailable
from service.quotas.limiter import CLIENT_NAME, RateLimiter
from service.quotas.limits import Limits
from service.tasks.resources import Resources
from service.tasks.service import admit_task
from service.teams.service import authenticate
from tests.factories import ADMIN, TeamKey, make_team, task_body, wait_for


async def try_submit(client: httpx.AsyncClient, team: TeamKey) -> httpx.Response:
    return await client.post("/v1/tasks", json=task_body(), headers=team.headers)


async def test_team_rpm_admits_a_burst_of_n_then_429_with_retry_after(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client, rpm_limit=3)
    answers = [await try_submit(client, team) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].headers["RateLimit-Policy"] == '"team";q=3;w=60'
    assert [a.headers["RateLimit"].split(";")[1] for a in answers] == ["r=2", "r=1", "r=0"]
    refused = await try_submit(client, team)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert await db.fetchval("SELECT count(*) FROM tasks") == 3
    # Reads are not submissions: they are never limited.
    assert (await client.get("/v1/tasks", headers=team.headers)).status_code == 200


async def test_key_rpm_applies_inside_the_team_rpm(client: httpx.AsyncClient) -> None:
    team = await make_team(client, rpm_limit=4)
    issued = await client.post(
        f"/admin/teams/{team.team['id']}/keys", json={"rpm_limit": 1}, headers=ADMIN
    )
    assert issued.json()["rpm_limit"] == 1
    limited = TeamKey(team=team.team, key=issued.json()["key"])
    first = await try_submit(client, limited)
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"key";q=1;w=60, "team";q=4;w=60'
    assert first.headers["RateLimit"].startswith('"key";r=0;')
    second = await try_submit(client, limited)
    assert second.status_code == 429 and "key rate limit of 1" in second.json()["error"]["message"]
    # The other key of the team still has the team's remaining 3.
    assert [(await try_submit(client, team)).status_code for _ in range(4)] == [200, 200, 200, 429]


async def test_concurrent_submissions_never_pass_the_rpm(client: httpx.AsyncClient) -> None:
    team = await make_team(client, rpm_limit=7)
    answers = await asyncio.gather(*(try_submit(client, team) for _ in range(30)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [429] * 23


async def test_a_redis_that_lost_the_script_loads_it_again(
    client: httpx.AsyncClient, res: Resources
) -> None:
    """After a Redis restart or SCRIPT FLUSH the limits still count exactly, whether the
    NOSCRIPT answer comes to a lone check or to several at once."""
    team = await make_team(client, rpm_limit=6)
    assert (await try_submit(client, team)).status_code == 200
    await res.redis.script_flush()
    answers = await asyncio.gather(*(try_submit(client, team) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200] * 4
    await res.redis.script_flush()
    after = [(await try_submit(client, team)).status_code for _ in range(2)]
    assert after == [200, 429]  # the team's log held all six admissions across the flushes


async def test_a_dropped_rate_limit_connection_is_opened_again(
    client: httpx.AsyncClient, res: Resources
) -> None:
    """Redis closing the limiter's own connection (restart, timeout, CLIENT KILL) costs no
    check: the next one reconnects, and the count is still exact."""
    team = await make_team(client, rpm_limit=3)
    assert (await try_submit(client, team)).status_code == 200
    clients = await res.redis.client_list()
    limiters = [c["id"] for c in clients if c.get("name") == CLIENT_NAME]
    assert limiters  # this process's, and an API process's if one runs
    for client_id in limiters:
        await res.redis.client_kill_filter(_id=client_id)
    answers = [await try_submit(client, team) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit"].split(";")[1] == "r=1"


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    """A Redis client pointing at a port where nothing listens."""
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    yield client
    await client.aclose()


@pytest.mark.parametrize("policy", ["allow", "deny"])
async def test_redis_unreachable_follows_the_configured_policy(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    dead_redis: Redis,
    policy: str,
) -> None:
    """'allow': submissions go on (budgets and concurrency are still exact in Postgres);
    'deny': 503 and nothing stored."""
    team = await make_team(client, rpm_limit=1, max_concurrent_tasks=1)
    cut_off = dataclasses.replace(
        res, limiter=RateLimiter(dead_redis, prefix="dead", on_error=policy)
    )
    caller = await authenticate(res.pool, token=team.key)
    body = TaskRequest.model_validate(task_body())
    lease = OnDemandConnection(res.pool)
    try:
        if policy == "deny":
            with pytest.raises(UpstreamUnavailable):
                await admit_task(cut_off, lease, caller=caller, body=body, idempotency_key=None)
            assert await db.fetchval("SELECT count(*) FROM tasks") == 0
            return
        admitted = await admit_task(cut_off, lease, caller=caller, body=body, idempotency_key=None)
        assert admitted.row["status"] == "queued" and admitted.headers == {}
        # The rate limit is off, but the concurrency limit (Postgres) still holds.
        with pytest.raises(ConcurrencyLimited):
            await admit_task(cut_off, lease, caller=caller, body=body, idempotency_key=None)
    finally:
        await lease.release()


async def test_a_redis_that_stops_answering_counts_as_unreachable(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    """A Redis that keeps the connection but answers nothing (paused, hung, a network
    black hole) must not hold submissions: after `stall_seconds` the check is dropped,
    one more try (a new connection, its handshake also bounded) meets the same, and the
    policy decides; once Redis answers again, so do the checks."""
    team = await make_team(client, rpm_limit=5)
    limiter = RateLimiter(res.redis, prefix="qgw-test:stall", on_error="deny", stall_seconds=0.2)
    caller = await authenticate(res.pool, token=team.key)
    limits = Limits(caller.key_id, caller.team_id, caller.key_rpm_limit, caller.rpm_limit)
    try:
        assert (await limiter.check(limits)).quotas[0].remaining == 4
        await res.redis.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamUnavailable):
            await limiter.check(limits)
        assert asyncio.get_running_loop().time() - started < 1.5  # not held by the pause
        await res.redis.ping()  # answered once the pause is over
        assert (await limiter.check(limits)).quotas[0].remaining in (2, 3)
    finally:
        await limiter.aclose()


async def log_length(res: Resources, scope: str, subject: str) -> int:
    return int(await res.redis.llen(res.limiter.log_key(scope, subject)))


async def test_a_changed_limit_applies_to_the_next_submission(
    client: httpx.AsyncClient, res: Resources
) -> None:
    """An admin lowering a team's limit between two submissions: the second meets the new
    limit, and the refused one is not in the log."""
    team = await make_team(client, rpm_limit=5)
    assert [(await try_submit(client, team)).status_code for _ in range(2)] == [200, 200]
    patched = await client.patch(
        f"/admin/teams/{team.team['id']}", json={"rpm_limit": 2}, headers=ADMIN
    )
    assert patched.status_code == 200
    refused = await try_submit(client, team)
    assert refused.status_code == 429 and "team rate limit of 2" in refused.text
    assert await log_length(res, "team", team.team["id"]) == 2


async def test_refused_requests_do_not_count(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    """A bad body or a revoked key ends the submission before its check: only admitted
    submissions fill the log."""
    team = await make_team(client, rpm_limit=2)
    assert (await try_submit(client, team)).status_code == 200
    bad = await client.post("/v1/tasks", json=task_body(duration=7), headers=team.headers)
    assert bad.status_code == 400
    not_json = await client.post("/v1/tasks", content=b"{", headers=team.headers)
    assert not_json.status_code == 400

    async def back_to_one() -> bool:
        return await log_length(res, "team", team.team["id"]) == 1

    await wait_for(back_to_one)
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE team_id = $1", team.team["id"])
    revoked = await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)
    assert revoked.status_code == 204
    assert (await try_submit(client, team)).status_code == 401
    await wait_for(back_to_one)


def test_checks_count_under_uvloop(res: Resources) -> None:
    """The API serves on uvloop (its transports are not asyncio's classes): concurrent
    checks there share the limiter's connection and each is counted once."""
    import uvloop

    prefix = f"qgw-test:uvloop:{free_port()}"

    async def checks() -> list[int]:
        limiter = RateLimiter(res.redis, prefix=prefix, on_error="deny")
        limits = Limits(uuid.uuid4(), uuid.uuid4(), 100, None)
        try:
            decisions = await asyncio.gather(*(limiter.check(limits) for _ in range(16)))
        finally:
            await limiter.aclose()
        return sorted(d.quotas[0].remaining for d in decisions)

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # a loop of its own
        remaining = thread.submit(uvloop.run, checks()).result(timeout=30)
    assert remaining == list(range(84, 100))
