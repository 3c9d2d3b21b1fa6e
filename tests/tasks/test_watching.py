"""A task someone looks at is read at the watched pace (issue 31 point 11), with callbacks
on and the first poll a minute away: its progress rises in the answers of a GET, while a
task nobody looks at is read no more often than Qingbo's callbacks ask (reads counted
at the simulator). The marks themselves: a look is told to Redis once, not per GET, and
lapses after QGW_WATCH_TTL_SECONDS."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse

from service.ops.state_metrics import STATE, scrape_registry
from service.tasks.reads import watch, watched_key, watched_tasks
from service.tasks.resources import Resources
from service.tasks.watching import Watching
from tests.factories import make_team, sim_tasks, submit, task_body, until, wait_for

pytestmark = pytest.mark.usefixtures("api_server")  # receives the simulator's callbacks

# With callbacks on, the first poll a minute after submission: only callbacks read a task
# nobody watches (one as it starts processing, one at its end).
SLOW_POLLS = {
    "poll_initial_seconds_with_callbacks": 60.0,
    "poll_max_seconds_with_callbacks": 120.0,
    "poll_lease_seconds": 30.0,
    "poll_watched_seconds": 1.5,
}


def reads_at_qingbo(tasks: list[dict[str, Any]], upstream_id: str) -> int:
    return next(int(t["reads"]) for t in tasks if t["task_id"] == upstream_id)


async def test_a_watched_task_shows_rising_progress_and_an_unwatched_one_is_not_read_more(
    client: httpx.AsyncClient, db: asyncpg.Connection, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 0.3, "processing_seconds": 9.0})
    team = await make_team(client)
    start_worker(**SLOW_POLLS)
    watched = (await submit(client, team))["task_id"]
    unwatched = (await submit(client, team))["task_id"]

    seen: list[int] = []

    async def looked_at_until_done() -> bool:
        answer = (await client.get(f"/v1/tasks/{watched}", headers=team.headers)).json()
        seen.append(answer["progress"])
        return bool(answer["status"] == "completed")

    await wait_for(looked_at_until_done, timeout=40, interval=0.3)
    rising = sorted({p for p in seen if 0 < p < 100})
    assert len(rising) >= 3, seen  # read every ~1.5 s over 9 s of processing, not at the end only
    assert seen == sorted(seen)  # and it never went back

    async def unwatched_done() -> bool:
        state = await db.fetchval("SELECT dispatch_state FROM tasks WHERE id = $1", unwatched)
        return bool(state == "done")

    await wait_for(unwatched_done, timeout=30)  # by the end's callback, nobody looking
    upstream = dict(
        await db.fetch(
            "SELECT id, upstream_task_id FROM tasks WHERE id = ANY($1)", [watched, unwatched]
        )
    )
    tasks = await sim_tasks(sim)
    assert reads_at_qingbo(tasks, upstream[unwatched]) <= 2  # the two callbacks' reads
    assert reads_at_qingbo(tasks, upstream[watched]) >= 4


async def test_looks_are_told_to_redis_once_per_third_of_the_ttl_and_lapse(res: Resources) -> None:
    """Many GETs of a task cost one write to Redis; an open stream keeps its task marked
    past the TTL; a look nobody renews lapses and the poll cron no longer sees it."""
    queue = f"{res.settings.arq_queue_name}:watch-{secrets.token_hex(3)}"  # this test's own
    watching = Watching(res.redis, queue, ttl_seconds=1.5, flush_seconds=0.05)
    watching.start()
    try:
        for _ in range(50):
            watching.look("glanced")
        with watching.watch("streamed"):
            await wait_for(lambda: watched_tasks(res.redis, queue))
            first = await res.redis.zscore(watched_key(queue), "glanced")
            stream_marked = await res.redis.zscore(watched_key(queue), "streamed")
            for _ in range(50):
                watching.look("glanced")

            async def stream_renewed() -> bool:
                return bool(await res.redis.zscore(watched_key(queue), "streamed") != stream_marked)

            await wait_for(stream_renewed, timeout=10)  # flushes ran since the looks
            assert await res.redis.zscore(watched_key(queue), "glanced") == first
            assert sorted(await watched_tasks(res.redis, queue)) == ["glanced", "streamed"]

            async def only_the_stream_left() -> bool:
                return await watched_tasks(res.redis, queue) == ["streamed"]

            # The looks lapse after the TTL; the open stream is renewed past it.
            await wait_for(only_the_stream_left, timeout=10)
        await until(lambda: watching.watched == 1)  # the stream's last look, for its TTL
        await wait_for(lambda: _none_watched(res, queue), timeout=10)
    finally:
        await watching.close()


async def _none_watched(res: Resources, queue: str) -> bool:
    return await watched_tasks(res.redis, queue) == []


async def test_the_watched_are_counted_in_a_gauge(res: Resources) -> None:
    queue = res.settings.arq_queue_name
    await res.redis.delete(watched_key(queue))  # this run's: other tests' looks gone
    await watch(res.redis, queue, {"a": time.time() + 30, "b": time.time() + 30})
    await watch(res.redis, queue, {"lapsed": time.time() - 1})
    await STATE.refresh(res, max_age=0)
    assert scrape_registry().get_sample_value("qgw_tasks_watched") == 2


async def test_a_get_an_event_stream_and_a_wait_mark_a_task_watched_an_ended_one_is_not(
    client: httpx.AsyncClient, res: Resources, live_url: str
) -> None:
    """No worker runs: the tasks stay pending, and each way of looking marks its own."""
    team = await make_team(client)
    queue = res.settings.arq_queue_name
    ended, got, streamed = [(await submit(client, team))["task_id"] for _ in range(3)]

    async def marked(task_id: str) -> bool:
        return task_id in await watched_tasks(res.redis, queue)

    await client.post(f"/v1/tasks/{ended}/cancel", headers=team.headers)
    assert (await client.get(f"/v1/tasks/{ended}", headers=team.headers)).status_code == 200
    assert (await client.get(f"/v1/tasks/{got}", headers=team.headers)).status_code == 200
    await wait_for(lambda: marked(got))
    assert not await marked(ended)  # looked at in the same batch: an ended task is not read

    async with (
        httpx.AsyncClient(timeout=10) as http,
        aconnect_sse(
            http, "GET", f"{live_url}/v1/tasks/{streamed}/events", headers=team.headers
        ) as sse,
    ):
        first = await anext(sse.aiter_sse())
        assert first.event == "queued"
        await wait_for(lambda: marked(streamed))  # while the stream is open

    waiting = asyncio.create_task(
        client.post("/v1/tasks", json=task_body(), headers={**team.headers, "Prefer": "wait=3"})
    )
    try:

        async def waited_marked() -> bool:
            found = await res.pool.fetchval(
                "SELECT id FROM tasks WHERE id <> ALL($1) AND team_id = $2",
                [ended, got, streamed],
                team.team["id"],
            )
            return bool(found) and await marked(found)

        await wait_for(waited_marked)  # by the wait (Prefer: wait), the task still pending
    finally:
        await waiting
