"""Admission batches: fast admissions that arrive while others are at Postgres go there
together, in one statement (budgets/sql/reserve_and_insert_tasks.sql), all or none.

Why: with every guard on, Postgres spent about 0.47 ms of CPU per admission, most of it
per statement and per commit rather than per row (perf on the backends: executor start-up,
constraint set-up, the commit's WAL flush; bench/cpu.py). Admissions that wait for a turn
share those. Nothing waits on a timer: a batch goes as soon as fewer than
`max_in_flight` are at Postgres, so a lone request (c=1) goes at once, alone, and batches
grow only with the load. A batch the statement refuses (a shard without room for the sum,
a capped team, any error) is admitted one task at a time instead, which gives each its own
answer; the caller sees exactly what a lone admission would have raised.

Measured with bench/cpu.py (wrk c=16, every guard on), before and after: 1,196-1,560
req/s with Postgres at 0.47-0.50 ms and the API at 0.48-0.55 ms of CPU per request, then
2,061-2,121 req/s at 0.16-0.17 ms and 0.38-0.39 ms (the API makes one round trip per
batch, too). Two batches at Postgres at once did best: one at a time gave 1,626 req/s,
four 1,636.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from service.budgets import admission_repository as admissions
from service.budgets.admission_repository import NewTask
from service.platform.metrics import ADMISSION_BATCH_SIZE


@dataclass
class _Waiting:
    task: NewTask
    timezone: str
    alert_percents: list[int]
    done: asyncio.Future[asyncpg.Record]


class AdmissionBatcher:
    def __init__(self, pool: asyncpg.Pool, *, max_in_flight: int = 2, max_batch: int = 64) -> None:
        self._pool = pool
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._in_flight = 0
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Admissions waiting for a turn at Postgres."""
        return len(self._waiting)

    async def close(self) -> None:
        """Wait for the batches at Postgres (their requests are waiting for them)."""
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def admit(
        self, task: NewTask, *, timezone: str, alert_percents: list[int]
    ) -> asyncpg.Record:
        """Reserve and insert `task` by the fast path, as `admissions.reserve_and_insert_task`
        (exclusive=False) would, and raise what it raises (BudgetShardFull included)."""
        done: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(task, timezone, alert_percents, done))
        self._send_more()
        return await done

    def _send_more(self) -> None:
        # A request that went away while its admission waited (cancelled) is not admitted.
        self._waiting = [w for w in self._waiting if not w.done.done()]
        while self._waiting and self._in_flight < self._max_in_flight:
            # The budget time zone is one per batch (one per process, but for tests).
            zone = self._waiting[0].timezone
            size = 1
            while (
                size < min(self._max_batch, len(self._waiting))
                and self._waiting[size].timezone == zone
            ):
                size += 1
            batch = self._waiting[:size]
            del self._waiting[:size]
            self._in_flight += 1
            sending = asyncio.create_task(self._send(batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            async with self._pool.acquire() as conn:
                ADMISSION_BATCH_SIZE.observe(len(batch))
                if len(batch) > 1:
                    rows = await admissions.reserve_and_insert_tasks(
                        conn, [w.task for w in batch], timezone=batch[0].timezone
                    )
                    if rows is not None:
                        for waiting, row in zip(batch, rows, strict=True):
                            _settle(waiting, row)
                        return
                for waiting in batch:
                    try:
                        row = await _admit_alone(conn, waiting)
                    except Exception as exc:  # the task's own answer: a refusal, or an error
                        _settle(waiting, exc)
                    else:
                        _settle(waiting, row)
        except Exception as exc:  # no connection, or it broke: every task not answered yet
            for waiting in batch:
                _settle(waiting, exc)
        finally:
            self._in_flight -= 1
            self._send_more()


async def _admit_alone(conn: asyncpg.Connection, waiting: _Waiting) -> asyncpg.Record:
    return await admissions.reserve_and_insert_task(
        conn,
        **waiting.task.columns(),
        timezone=waiting.timezone,
        alert_percents=waiting.alert_percents,
    )


def _settle(waiting: _Waiting, outcome: asyncpg.Record | BaseException) -> None:
    if waiting.done.done():  # its request went away (cancelled): the task stands or not
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
