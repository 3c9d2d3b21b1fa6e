"""The read lane (service/tasks/reads.py) on the real Redis: ends first, then the others in
the order they came, never more at once than its concurrency, and a failing read or an
idle spell does not stop it."""

from __future__ import annotations

import asyncio
import secrets

from arq.connections import RedisSettings, create_pool

from service.tasks.reads import ReadLane, hand_over
from service.tasks.resources import Resources
from tests.factories import until, wait_for
from tests.private_redis import PrivateRedis


class Reads:
    """A read function that records what it read and holds each read until released."""

    def __init__(self, *, failing: frozenset[str] = frozenset()) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()
        self.failing = failing

    async def __call__(self, task_id: str) -> None:
        self.started.append(task_id)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
            if task_id in self.failing:
                raise RuntimeError("Qingbo exploded")
            self.finished.append(task_id)
        finally:
            self.running -= 1


def lane_for(res: Resources, reads: Reads, *, concurrency: int) -> tuple[ReadLane, str]:
    queue = f"{res.settings.arq_queue_name}:lane-{secrets.token_hex(3)}"  # this test's own
    return ReadLane(res.redis, queue, reads, concurrency=concurrency, timeout_seconds=10), queue


async def test_ends_go_first_then_the_rest_as_they_came_never_more_than_the_concurrency(
    res: Resources,
) -> None:
    reads = Reads()
    lane, queue = lane_for(res, reads, concurrency=2)
    await hand_over(res.redis, queue, ["a", "b", "c"])
    await hand_over(res.redis, queue, ["d"])
    await hand_over(res.redis, queue, ["end"], ended=True)
    lane.start()
    try:
        await until(lambda: len(reads.started) == 2)
        assert reads.started == ["end", "a"]  # the two it has room for; the rest wait
        reads.release.set()
        await until(lambda: len(reads.finished) == 5)
    finally:
        await lane.close()
    assert reads.started == ["end", "a", "b", "c", "d"]
    assert reads.most_at_once == 2
    assert await lane.take(10) == []  # each was taken once


async def test_a_failing_read_is_dropped_and_the_lane_goes_on(res: Resources) -> None:
    reads = Reads(failing=frozenset({"bad"}))
    reads.release.set()
    lane, queue = lane_for(res, reads, concurrency=1)
    await hand_over(res.redis, queue, ["bad", "good"])
    lane.start()
    try:
        await until(lambda: reads.finished == ["good"])
    finally:
        await lane.close()
    assert reads.started == ["bad", "good"]


async def blocked_on_redis(res: Resources) -> bool:
    return any(client["cmd"] == "brpop" for client in await res.redis.client_list())


async def test_an_idle_lane_wakes_for_a_read_handed_over_later(res: Resources) -> None:
    reads = Reads()
    reads.release.set()
    lane, queue = lane_for(res, reads, concurrency=4)
    lane.start()
    try:
        await wait_for(lambda: blocked_on_redis(res))  # it found the lane empty
        assert reads.started == []
        await hand_over(res.redis, queue, ["late"], ended=True)
        await until(lambda: reads.finished == ["late"])
    finally:
        await lane.close()


async def test_closing_lets_the_running_reads_finish_and_takes_no_more(res: Resources) -> None:
    reads = Reads()
    lane, queue = lane_for(res, reads, concurrency=1)
    await hand_over(res.redis, queue, ["running", "waiting"])
    lane.start()
    await until(lambda: reads.started == ["running"])
    closing = asyncio.create_task(lane.close())
    await until(lambda: not lane.taking)
    assert not closing.done()  # it waits for the running read
    reads.release.set()
    await asyncio.wait_for(closing, timeout=10)
    assert reads.finished == ["running"]
    assert await lane.take(10) == [b"waiting"]  # still handed over, for another worker


async def test_the_lane_comes_back_after_its_redis_restarts(private_redis: PrivateRedis) -> None:
    """Redis killed under a lane blocked on it, then started again empty (its Lua script
    gone with it): the lane goes on with the reads handed over after."""
    redis = await create_pool(RedisSettings.from_dsn(private_redis.url))
    reads = Reads()
    reads.release.set()
    lane = ReadLane(redis, "lane-restart", reads, concurrency=2, timeout_seconds=10)
    try:
        await hand_over(redis, "lane-restart", ["before"])
        lane.start()
        await until(lambda: reads.finished == ["before"])
        private_redis.stop()
        private_redis.start()
        await hand_over(redis, "lane-restart", ["after"], ended=True)
        await until(lambda: reads.finished == ["before", "after"])
        assert lane.taking
    finally:
        await lane.close()
        await redis.aclose()
