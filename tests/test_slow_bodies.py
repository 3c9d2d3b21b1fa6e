"""Slow bodies and a drained pool (issue 31, point 2), against a real API process with a
pool of 3: raw sockets that send their headers and drip their bodies hold no database
connection, and are cut at the body deadline; a pool held by stuck statements answers
503 with Retry-After, and /readyz says so, instead of waiting for ever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.tasks.submission import hash_token
from tests.edge_api import EdgeApi, RawRequest, edge_api
from tests.factories import ADMIN, TeamKey, make_team, task_body, wait_for

POOL = 3
BODY_DEADLINE = 10


@pytest.fixture(scope="module")
def api(settings: Settings, logs_dir: Path) -> Iterator[EdgeApi]:
    with edge_api(
        settings,
        logs_dir,
        QGW_DB_POOL_MIN_SIZE="1",
        QGW_DB_POOL_MAX_SIZE=str(POOL),
        QGW_DB_ACQUIRE_TIMEOUT_SECONDS="1",
        QGW_BODY_READ_TIMEOUT_SECONDS=str(BODY_DEADLINE),
    ) as running:
        yield running


@pytest.fixture
async def http(api: EdgeApi) -> AsyncIterator[httpx.AsyncClient]:
    # The timeout only ends a hung test: it asserts nothing about speed.
    async with httpx.AsyncClient(base_url=api.url, timeout=20) as client:
        yield client


def head(method: str, path: str, headers: dict[str, str], length: int = 200) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n\r\n{"  # and the first byte of the body


async def drip(requests: list[RawRequest], stop: asyncio.Event) -> None:
    """One more byte on each connection every half second, never the whole body."""
    while not stop.is_set():
        for request in requests:
            request.send(b" ")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def tasks_with_callback_tokens(
    http: httpx.AsyncClient, db: asyncpg.Connection, team: TeamKey, count: int
) -> list[str]:
    ids = []
    for _ in range(count):
        answer = await http.post("/v1/tasks", json=task_body(), headers=team.headers)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["task_id"])
    await db.execute(
        "UPDATE tasks SET dispatch_state = 'submitted', upstream_task_id = 'up-' || id, "
        "callback_token_hash = $2 WHERE id = ANY($1)",
        ids,
        hash_token("right-token"),
    )
    return ids


async def test_slow_bodies_hold_no_connection_and_end_at_the_deadline(
    api: EdgeApi, http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(http, max_concurrent_tasks=100)
    task_ids = await tasks_with_callback_tokens(http, db, team, 20)
    key = {"Authorization": f"Bearer {team.key}"}
    slow = [  # callers who proved who they are, then send their bodies slowly
        *(
            RawRequest(
                api.port, head("POST", f"/internal/qingbo/callback/{t}?token=right-token", {})
            )
            for t in task_ids
        ),
        RawRequest(api.port, head("POST", "/v1/tasks", key)),
        RawRequest(api.port, head("POST", "/v1/tasks/estimate", key)),
        RawRequest(api.port, head("PUT", "/admin/budgets", ADMIN)),
        RawRequest(api.port, head("PATCH", f"/admin/teams/{team.team['id']}", ADMIN)),
    ]
    strangers = [
        RawRequest(api.port, head("POST", f"/internal/qingbo/callback/{t}?token=wrong", {}))
        for t in task_ids[:5]
    ]
    stop = asyncio.Event()
    dripping = asyncio.create_task(drip(slow + strangers, stop))
    try:
        # Strangers are turned away before their bodies, which are never read.
        async def strangers_turned_away() -> bool:
            return all(s.answer().startswith(b"HTTP/1.1 404") for s in strangers)

        await wait_for(strangers_turned_away, timeout=15)
        # Meanwhile the pool serves everyone else: more than POOL slow bodies are open.
        listed = await http.get("/v1/tasks", headers=team.headers)
        assert listed.status_code == 200, listed.text
        submitted = await http.post("/v1/tasks", json=task_body(), headers=team.headers)
        assert submitted.status_code == 200, submitted.text
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        callback = await http.post(
            f"/internal/qingbo/callback/{task_ids[0]}?token=right-token",
            json={"status": "processing"},
        )
        assert callback.status_code == 200, callback.text
        assert [s.answer() for s in slow] == [b""] * len(slow)  # all still sending

        # The deadline ends every slow body: 408 in the envelope.
        async def all_cut() -> bool:
            return all(b"\r\n\r\n{" in s.answer() for s in slow)

        await wait_for(all_cut, timeout=BODY_DEADLINE + 20)
    finally:
        stop.set()
        await dripping
        for request in slow + strangers:
            request.close()
    for request in slow:
        assert request.received.startswith(b"HTTP/1.1 408"), request.received[:200]
        assert b'"code":"request_timeout"' in request.received, request.received[-300:]


async def test_a_drained_pool_answers_503_with_retry_after(
    api: EdgeApi, http: httpx.AsyncClient, database_url: str
) -> None:
    team = await make_team(http)
    task = await http.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert task.status_code == 200, task.text
    path = f"/v1/tasks/{task.json()['task_id']}"
    await http.get(path, headers=team.headers)  # the key is known: no connection to authenticate
    locker = await asyncpg.connect(database_url)
    try:
        stuck = locker.transaction()
        await stuck.start()
        await locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        held = [asyncio.create_task(http.get(path, headers=team.headers)) for _ in range(POOL)]

        async def pool_held() -> bool:  # every pooled connection waits on the lock
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return bool(waiting >= POOL)

        await wait_for(pool_held, timeout=15)
        for method, url, kwargs in (
            ("GET", "/v1/tasks", {}),
            ("POST", "/v1/tasks", {"json": task_body()}),
        ):
            refused = await http.request(method, url, headers=team.headers, **kwargs)
            assert refused.status_code == 503, (url, refused.text)
            assert refused.json()["error"]["code"] == "service_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503, not_ready.text
        assert not_ready.json()["checks"]["postgres"].startswith("error")
        await stuck.rollback()
        assert [(await h).status_code for h in held] == [200] * POOL
        assert (await http.get("/readyz")).status_code == 200
    finally:
        await locker.close()
