"""Which tasks someone is looking at (a GET of the task, its event stream, a wait on it),
told to the poll schedule, which reads those at QGW_POLL_WATCHED_SECONDS (README
"Tracking"): progress rises where someone sees it, and nobody pays for it elsewhere.

The GET is hot, so a look costs it a dict write and nothing else: this process gathers
its looks and writes them to Redis beside the requests, in one round trip, at most every
`flush_seconds`; a task still looked at is told again only when its mark is a third
through its QGW_WATCH_TTL_SECONDS. No database write, and Redis only paces: the poll
leases in Postgres still decide who reads (tasks/tracking.py::hand_over_due_polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.tasks.reads import watch

logger = logging.getLogger(__name__)


class Watching:
    def __init__(
        self, redis: Redis, queue: str, *, ttl_seconds: float, flush_seconds: float = 0.5
    ) -> None:
        self._redis = redis
        self._queue = queue
        self._ttl = ttl_seconds
        self._flush = flush_seconds
        self._looks: dict[str, float] = {}  # task id -> when its last look lapses (monotonic)
        self._told: dict[str, float] = {}  # task id -> when Redis's mark of it lapses
        self._open: Counter[str] = Counter()  # streams and waits open, per task
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="task-watching")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def look(self, task_id: str) -> None:
        """Someone looked at the task: watched for QGW_WATCH_TTL_SECONDS from now."""
        until = time.monotonic() + self._ttl
        self._looks[task_id] = until
        if self._stale(task_id, until):
            self._wanted.set()

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[None]:
        """Watched while the block runs (a stream, a wait) and QGW_WATCH_TTL_SECONDS after."""
        self._open[task_id] += 1
        self.look(task_id)
        try:
            yield
        finally:
            self._open[task_id] -= 1
            if self._open[task_id] <= 0:
                del self._open[task_id]
            self.look(task_id)

    @property
    def watched(self) -> int:
        return len(self._looks)

    def _stale(self, task_id: str, until: float) -> bool:
        # Told again once a third of its mark has gone by, not on every look.
        return until - self._told.get(task_id, 0.0) > self._ttl / 3

    def _due(self) -> dict[str, float]:
        """What to tell Redis now (Unix times), the lapsed looks forgotten on the way."""
        now = time.monotonic()
        for task_id in self._open:
            self._looks[task_id] = now + self._ttl
        for task_id in [t for t, until in self._looks.items() if until <= now]:
            del self._looks[task_id]
            self._told.pop(task_id, None)
        wall = time.time() - now
        return {t: wall + until for t, until in self._looks.items() if self._stale(t, until)}

    async def _run(self) -> None:
        while True:
            # Woken by a new look, or in time to renew the marks of open streams and waits.
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
            # comes as the wait ends (a look, then close()), and the loop would run on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ttl / 3):
                    await self._wanted.wait()
            self._wanted.clear()
            due = self._due()
            try:
                await watch(self._redis, self._queue, due)
            except (RedisError, OSError) as exc:
                # Only the pace of reads is lost: the regular schedule still reads the task.
                logger.warning("watched tasks not marked", extra={"error": type(exc).__name__})
            else:
                wall = time.time() - time.monotonic()
                self._told.update({t: until - wall for t, until in due.items()})
            await asyncio.sleep(self._flush)
