"""Admission batches: fast admissions that arrive while others are at Postgres go there
together, in the fast path's one statement (`service/budgets/repository.py::
reserve_and_insert_tasks`, budgets/sql/reserve_and_insert_tasks.sql), all or none.

Why: an admission's Postgres CPU is mostly per statement and per commit rather than per
row (perf on the backends: executor start-up, constraint set-up, the commit's WAL flush;
bench/cpu.py), and the API makes one round trip per batch. Admissions that wait for a turn
share those. Nothing waits on a timer: a batch goes as soon as fewer than `max_in_flight`
are at Postgres, so a lone request goes at once, alone (a batch of one, through the same
statement), and batches grow only with the load. The default `max_in_flight` is the one
bench/cpu.py found best (bench/RESULTS.md; docs/decisions/).

What each admission is answered:
- its task's row;
- a batch of one refused: what the statement raised (BudgetShardFull: the caller goes the
  exclusive way; ConcurrencyLimited);
- a batch of several refused for one of its tasks (a shard without room for the sum, a
  capped team): counted by reason, and its tasks go again, each a batch of one, which gives
  each its own answer;
- any other error: no task's refusal, so no task's own answer either. It is counted by its
  name and logged, and every admission of the batch is answered with it; never tried again
  one at a time, which would hide a broken statement behind a slower way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from service.budgets import repository as budgets
from service.budgets.errors import BudgetShardFull, CappedTeamInBatch
from service.budgets.repository import NewTask
from service.platform.errors import ConcurrencyLimited
from service.platform.metrics import ADMISSION_BATCH_SIZE, ADMISSION_BATCHES_DECLINED

logger = logging.getLogger(__name__)

# What the fast path refuses a batch with because of one of its tasks, by counter reason.
_REFUSALS: dict[type[Exception], str] = {
    BudgetShardFull: "shard_full",
    CappedTeamInBatch: "capped_team",
    ConcurrencyLimited: "concurrency_limited",  # a lone task only: a batch declines first
}


@dataclass
class _Waiting:
    task: NewTask
    timezone: str
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

    async def admit(self, task: NewTask, *, timezone: str) -> asyncpg.Record:
        """Reserve and insert `task` by the fast path, with the admissions that arrive
        meanwhile; its row, or what a batch of one would raise (see the module)."""
        done: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(task, timezone, done))
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
                await _admit(conn, batch)
        except Exception as exc:  # no connection, or it broke: every task not answered yet
            _decline(batch, exc)
        finally:
            self._in_flight -= 1
            self._send_more()


async def _admit(conn: asyncpg.Connection, batch: list[_Waiting]) -> None:
    """Run the fast path on `batch` and answer each of its admissions (see the module)."""
    try:
        rows = await budgets.reserve_and_insert_tasks(
            conn, [w.task for w in batch], timezone=batch[0].timezone
        )
    except tuple(_REFUSALS) as refused:
        if len(batch) == 1:
            _settle(batch[0], refused)
            return
        ADMISSION_BATCHES_DECLINED.labels(_REFUSALS[type(refused)]).inc()
        for waiting in batch:  # each its own answer, from the same statement
            await _admit(conn, [waiting])
    except Exception as exc:
        _decline(batch, exc)
    else:
        for waiting, row in zip(batch, rows, strict=True):
            _settle(waiting, row)


def _decline(batch: list[_Waiting], exc: Exception) -> None:
    """An unexpected error: counted, logged, and the answer of every admission in `batch`."""
    reason = type(exc).__name__
    ADMISSION_BATCHES_DECLINED.labels(reason).inc()
    logger.error(
        "admission batch declined",
        extra={
            "reason": reason,
            "sqlstate": getattr(exc, "sqlstate", None),
            "error": str(exc),
            "tasks": len(batch),
        },
    )
    for waiting in batch:
        _settle(waiting, exc)


def _settle(waiting: _Waiting, outcome: asyncpg.Record | BaseException) -> None:
    if waiting.done.done():  # its request went away (cancelled): the task stands or not
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
