"""The read lane: reads of tracked tasks from Qingbo, handed from the callback route and
the poll cron to the workers through two Redis lists, instead of one arq job per read.

Why not arq jobs: arq starts its jobs one at a time, four Redis round trips each, in one
loop that shares the worker's event loop with every running job. With 10,000 tasks in
flight and callbacks on (bench/inflight.py), most jobs were reads, arq could not start
them as fast as they came, and every job, ends read "ahead of the queue" included, waited
seconds around the first ends. Here a read costs one LPUSH to hand over, and a worker takes
as many as it has room for in one round trip, ends first. bench/inflight.py prints what
this gives (docs/decisions/015-read-lane.md).

Losing a read loses nothing: whoever hands a read over has first leased the task's next
poll (`repository.lease_poll`, `claim_due_polls`), so if the read is lost (Redis
down, a worker killed mid-read) the poll cron hands it over again when the lease ends.
Postgres decides; Redis only schedules, as for arq's jobs. A read Qingbo fails (429, 5xx,
no answer) is no exception here: tracking makes the task due again on its own short
backoff (`tracking.read_retry_delay`). The watched set below only paces the poll cron.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


def lane_keys(queue: str) -> tuple[str, str]:
    """The lane's two lists beside arq's queue: reads of tasks that ended, then the rest."""
    return f"{queue}:reads:ends", f"{queue}:reads"


async def hand_over(redis: Redis, queue: str, task_ids: list[str], *, ended: bool = False) -> None:
    """Ask the workers to read these tasks from Qingbo (`ended`: a callback said the task
    ended, so it goes before every other read waiting). One round trip for any number."""
    if task_ids:
        ends, reads = lane_keys(queue)
        # redis-py's types cover its sync client too: on redis.asyncio this is awaitable.
        await cast(Awaitable[int], redis.lpush(ends if ended else reads, *task_ids))


# Up to ARGV[1] ids, oldest first: from the ends list, then the rest from the other.
# One round trip, and a worker never takes more than it has room to run.
_TAKE = """
local n = tonumber(ARGV[1])
local got = redis.call('RPOP', KEYS[1], n) or {}
if #got < n then
    local more = redis.call('RPOP', KEYS[2], n - #got)
    if more then
        for _, id in ipairs(more) do got[#got + 1] = id end
    end
end
return got
"""


class ReadLane:
    """Runs the reads handed over to this worker process, `concurrency` at most at once.

    A read that raises is logged and dropped: its lease ends and the poller reads again.
    """

    def __init__(
        self,
        redis: Redis,
        queue: str,
        read: Callable[[str], Awaitable[Any]],
        *,
        concurrency: int,
        timeout_seconds: float,
        idle_wait_seconds: int = 1,
    ) -> None:
        self._redis = redis
        self._keys = lane_keys(queue)
        self._read = read
        self._concurrency = concurrency
        self._timeout = timeout_seconds
        self._idle_wait = idle_wait_seconds
        self._take = redis.register_script(_TAKE)
        self._running: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="read-lane")

    @property
    def taking(self) -> bool:
        """Whether it still takes reads (started, not closed)."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Stop taking reads and let the running ones finish (each within its timeout)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._room.wait()
            try:
                task_ids = await self._next(self._concurrency - len(self._running))
            except (RedisError, OSError) as exc:
                logger.warning("read lane: Redis unavailable", extra={"error": type(exc).__name__})
                await asyncio.sleep(self._idle_wait)  # a retry pace; the poll leases cover
                continue
            for task_id in task_ids:
                self._begin(task_id.decode())

    async def take(self, room: int) -> list[bytes]:
        """Up to `room` of the reads waiting, in the order they are run: ends first, then
        the others, each list oldest first. Nothing waits: an empty list."""
        taken: list[bytes] = await self._take(keys=list(self._keys), args=[room])
        return taken

    async def _next(self, room: int) -> list[bytes]:
        """What is waiting, up to `room`; when nothing is, wait for one (a blocking pop:
        an idle lane costs Redis nothing between reads)."""
        taken = await self.take(room)
        if taken:
            return taken
        popped = await cast(
            Awaitable[list[bytes] | None], self._redis.brpop(list(self._keys), self._idle_wait)
        )
        return [popped[1]] if popped else []

    def _begin(self, task_id: str) -> None:
        task = asyncio.create_task(self._one(task_id), name=f"read:{task_id}")
        self._running.add(task)
        if len(self._running) >= self._concurrency:
            self._room.clear()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._room.set()

    async def _one(self, task_id: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._read(task_id)
        except Exception:  # the lease brings the read back; one bad read must not stop the lane
            logger.exception("read failed", extra={"task_id": task_id})


def watched_key(queue: str) -> str:
    """The sorted set of the tasks someone is looking at: id -> when the look lapses (Unix
    seconds). API processes write it (tasks/watching.py); the poll cron reads it."""
    return f"{queue}:watched"


async def watch(redis: Redis, queue: str, until: dict[str, float]) -> None:
    """Mark these tasks watched until the given Unix times. One round trip for any number."""
    if until:
        await cast(Awaitable[int], redis.zadd(watched_key(queue), until))


async def watched_tasks(redis: Redis, queue: str) -> list[str]:
    """The tasks watched now, the lapsed marks dropped on the way: one round trip, the cost
    of the watched alone, whatever else is in flight."""
    key = watched_key(queue)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zrange(key, 0, -1)
        _, ids = await pipe.execute()
    return [task_id.decode() for task_id in ids]
