"""Whole stack over real HTTP: API and worker processes, the simulator, Postgres and Redis."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from service.cli.dev import free_port
from service.config import Settings
from service.tasks import dispatch
from service.tasks.resources import Resources
from tests.factories import (
    TeamKey,
    drop_queued_jobs,
    make_team,
    submit,
    task_status,
    wait_for,
    wait_terminal,
)

pytestmark = pytest.mark.usefixtures("api_server")


async def sim_tasks(sim: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await sim.get("/_sim/tasks")).json()["tasks"])


@pytest.fixture
async def team(client: httpx.AsyncClient) -> TeamKey:
    return await make_team(client)


async def test_tasks_complete_and_fail_end_to_end(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, team: TeamKey, start_worker: Any
) -> None:
    start_worker()
    ok = await submit(client, team, image_urls=["https://img.example/first-frame.png"])
    done = await wait_terminal(client, team, ok["task_id"])
    assert done["status"] == "completed" and done["progress"] == 100
    assert done["result"]["videos"][0]["url"].startswith("http")
    assert done["action"] == "image2video" and done["upstream_task_id"]

    await sim.put("/_sim/config", json={"fail_rate": 1.0})
    bad = await submit(client, team)
    failed = await wait_terminal(client, team, bad["task_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] in (
        "generation_failed",
        "task_failed",
    )
    assert len(await sim_tasks(sim)) == 2


async def test_callbacks_drive_tracking_when_polling_is_slow(
    client: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    team: TeamKey,
    start_worker: Any,
    db: asyncpg.Connection,
) -> None:
    # Polls are an hour apart, so only Qingbo's callback (to the API process) can finish it.
    start_worker(poll_initial_seconds_with_callbacks=3600, poll_max_seconds_with_callbacks=3600)
    task = await submit(client, team)
    done = await wait_terminal(client, team, task["task_id"], timeout=20)
    assert done["status"] == "completed"


async def test_cancel_while_queued_upstream_cancels_at_qingbo(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, team: TeamKey, start_worker: Any
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 60})
    start_worker()
    task = await submit(client, team)

    async def submitted() -> bool:
        return bool((await task_status(client, team, task["task_id"]))["upstream_task_id"])

    await wait_for(submitted)
    cancelled = await client.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert [t["status"] for t in await sim_tasks(sim)] == ["cancelled"]


async def test_cancel_while_processing_is_409(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, team: TeamKey, start_worker: Any
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 60})
    start_worker()
    task = await submit(client, team)

    async def processing() -> bool:
        return (await task_status(client, team, task["task_id"]))["status"] == "processing"

    await wait_for(processing)
    refused = await client.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_cancellable"
    assert [t["status"] for t in await sim_tasks(sim)] == ["processing"]


async def test_worker_killed_mid_task_still_finishes_with_one_submission(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, team: TeamKey, start_worker: Any
) -> None:
    await sim.put(
        "/_sim/config", json={"queue_seconds": 1, "processing_seconds": 2, "send_callbacks": False}
    )
    first = start_worker()
    tasks = [await submit(client, team) for _ in range(3)]

    async def all_submitted() -> bool:
        states = [await task_status(client, team, t["task_id"]) for t in tasks]
        return all(s["upstream_task_id"] for s in states)

    await wait_for(all_submitted)
    first.kill()
    start_worker()
    for task in tasks:
        assert (await wait_terminal(client, team, task["task_id"]))["status"] == "completed"
    assert len(await sim_tasks(sim)) == 3


async def test_redis_flushed_mid_flight_the_reconciler_recovers_every_task(
    client: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    team: TeamKey,
    start_worker: Any,
    settings: Settings,
    res: Resources,
    db: asyncpg.Connection,
) -> None:
    await sim.put(
        "/_sim/config", json={"queue_seconds": 1, "processing_seconds": 1, "send_callbacks": False}
    )
    tasks = [await submit(client, team) for _ in range(5)]
    # Claimed for submission, their submit jobs queued in Redis... which is then flushed.
    assert await dispatch.dispatch_pending(res) == 5
    queue = aioredis.Redis.from_url(settings.redis_url)
    assert await queue.zcard(settings.arq_queue_name) >= 5
    await drop_queued_jobs(queue, settings.arq_queue_name)
    start_worker()
    first = [await wait_terminal(client, team, t["task_id"]) for t in tasks[:2]]
    # Flush again while the rest are tracked: their poll jobs vanish too.
    await drop_queued_jobs(queue, settings.arq_queue_name)
    await queue.aclose()
    finished = first + [await wait_terminal(client, team, t["task_id"]) for t in tasks[2:]]
    assert [t["status"] for t in finished] == ["completed"] * 5
    assert len(await sim_tasks(sim)) == 5
    # Each claim was lost with Redis and taken back by the reconciler: a second attempt.
    attempts = await db.fetch("SELECT dispatch_attempts FROM tasks")
    assert [r["dispatch_attempts"] for r in attempts] == [2] * 5


async def test_worker_serves_health_readiness_and_metrics(start_worker: Any) -> None:
    port = free_port()
    start_worker(worker_http_port=port, worker_http_host="127.0.0.1")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as ops:

        async def up() -> httpx.Response | None:
            try:
                return await ops.get("/healthz")
            except httpx.TransportError:
                return None

        assert (await wait_for(up)).json() == {"status": "ok"}
        ready = await ops.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": "ok", "migrations": "ok", "redis": "ok"}
        assert "qgw_upstream_calls_total" in (await ops.get("/metrics")).text
