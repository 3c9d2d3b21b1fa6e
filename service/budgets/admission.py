"""Group commit for admissions.

Exact budgets make every admission under one budget window wait for the previous one's
commit (its row lock is held until then), so one hot window admits at most one task per
commit. This batcher lets a process send the admissions that arrive while its previous
statement runs as one statement: one transaction and one commit for all of them. Nothing
waits on a timer: alone, an admission goes at once; under load, batches form by
themselves. Each task in a batch is still refused or admitted on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.budgets import repository
from service.budgets.repository import Admit

MAX_BATCH = 64
DEADLOCK_RETRIES = 3


@dataclass(frozen=True)
class Window:
    """What a batch is judged under; a batch takes its first admission's."""

    now: datetime
    timezone: str
    alert_percents: list[int]


class AdmissionBatcher:
    """One admission statement out at a time per process: inline on the caller's
    connection when none is out, else queued for the next batch on `pool` (its own, see
    resources.py, so a request holding a pooled connection never waits for another)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._queue: list[tuple[Admit, Window, asyncio.Future[asyncpg.Record]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._busy = False  # an inline admission is out

    async def admit(self, item: Admit, window: Window, conn: asyncpg.Connection) -> asyncpg.Record:
        """The task's row (see repository.admit_tasks), admitted with whatever else came.

        When no batch is out, it goes at once on the caller's own connection `conn` (no
        hop); admissions arriving meanwhile queue and go together after it.
        """
        if not self._busy and not self._queue:
            self._busy = True
            try:
                (row,) = await self._admit_on(conn, [item], window)
                return row
            finally:
                self._busy = False
                self._start()
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._queue.append((item, window, future))
        if not self._busy:
            self._start()
        return await asyncio.shield(future)  # a caller that leaves does not stop its batch

    def _start(self) -> None:
        if self._queue and (self._runner is None or self._runner.done()):
            self._runner = asyncio.create_task(self._run(), name="admission-batcher")

    async def _run(self) -> None:
        self._busy = True
        try:
            await self._drain()
        finally:
            self._busy = False

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                rows = await self._admit([item for item, _, _ in batch], batch[0][1])
                for (_, _, future), row in zip(batch, rows, strict=True):
                    if not future.done():
                        future.set_result(row)
            except BaseException as exc:  # no caller may be left waiting
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("shut down")
                        )
                if not isinstance(exc, Exception):
                    raise

    async def _admit(self, items: list[Admit], window: Window) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            return await self._admit_on(conn, items, window)

    async def _admit_on(
        self, conn: asyncpg.Connection, items: list[Admit], window: Window
    ) -> list[asyncpg.Record]:
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return await repository.admit_tasks(
                    conn,
                    items,
                    now=window.now,
                    timezone=window.timezone,
                    alert_percents=window.alert_percents,
                )
            except asyncpg.DeadlockDetectedError:
                # Only window rows created at the same instant by two batches can cross.
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner
