"""Waiting for a task without polling: submit-and-wait (`/v1/tasks/sync`, `Prefer: wait`)
and the event stream. Woken by the tasks' change notifications; no connection is held
while waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from service.catalog.schemas import TaskRequest
from service.platform.db import OnDemandConnection
from service.platform.errors import Unauthorized
from service.platform.types import whole_number
from service.tasks import repository
from service.tasks.render import render_task
from service.tasks.resources import Resources
from service.tasks.service import Admission, admit_task
from service.tasks.states import DispatchState, TaskStatus
from service.teams.key_watch import REVOKED_MESSAGE, KeyWatch, watch_key
from service.teams.service import Caller


async def submit_and_wait(
    res: Resources,
    *,
    caller: Caller,
    body: TaskRequest,
    idempotency_key: str | None,
    wait_seconds: float,
    gone: asyncio.Event | None = None,
) -> Admission:
    """Admit like admit_task, then wait_for_outcome (the connection is given back first)."""
    async with OnDemandConnection(res.pool) as db:
        admission = await admit_task(
            res, db, caller=caller, body=body, idempotency_key=idempotency_key
        )
    row = await wait_for_outcome(
        res, caller=caller, task_id=admission.row["id"], wait_seconds=wait_seconds, gone=gone
    )
    return Admission(row, admission.headers)


async def wait_for_outcome(
    res: Resources,
    *,
    caller: Caller,
    task_id: str,
    wait_seconds: float,
    gone: asyncio.Event | None = None,
) -> asyncpg.Record:
    """The task once terminal, or as it is when the wait is over or the caller has gone
    (`gone`; the task itself goes on): `/v1/tasks/sync` and `Prefer: wait` alike.

    No connection is held while waiting, and nothing polls: the task's change
    notification wakes the waiter, which then re-reads the row.
    """
    assert res.notifications is not None, "waits need the API's notification listener"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    with (
        res.notifications.subscribe(task_id) as changed,
        watched(res, task_id),
        _watch_key(res, caller, changed) as key,
    ):
        while True:
            changed.clear()
            if not await key.holds():  # revoked while waiting: the task goes on
                raise Unauthorized(REVOKED_MESSAGE)
            async with res.pool.acquire() as conn:
                row = await repository.get_task(conn, task_id, team_id=caller.team_id)
            assert row is not None
            remaining = deadline - loop.time()
            if row["dispatch_state"] == DispatchState.DONE or remaining <= 0:
                return row
            if not await _wait_for_change(changed, gone, key.wait_seconds(remaining)):
                return row


async def _wait_for_change(
    changed: asyncio.Event, gone: asyncio.Event | None, timeout: float
) -> bool:
    """Wait for a change notification; False if the caller went away first."""
    waits = [asyncio.ensure_future(changed.wait())]
    if gone is not None:
        waits.append(asyncio.ensure_future(gone.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return gone is None or not gone.is_set()


def _watch_key(
    res: Resources, caller: Caller, wake: asyncio.Event
) -> contextlib.AbstractContextManager[KeyWatch]:
    """The caller's key re-checked on any key change (`wake` is set) and on each
    keep-alive tick, so a revoked key ends the wait or stream it holds open."""
    every = res.settings.sse_keepalive_seconds
    return watch_key(res.pool, res.keys, caller, every=every, wake=wake)


def watched(res: Resources, task_id: str) -> contextlib.AbstractContextManager[None]:
    """The task is read at the watched pace while someone waits on it or streams it."""
    return res.watching.watch(task_id) if res.watching else contextlib.nullcontext()


_STATUS_RANK = {TaskStatus.QUEUED: 0, TaskStatus.PROCESSING: 1}


def event_version(row: Any) -> int:
    """Orders a task's observable states: status first, then progress (never goes back)."""
    return _STATUS_RANK.get(row["status"], 2) * 1000 + int(row["progress"])


async def task_events(
    res: Resources,
    *,
    caller: Caller,
    task_id: str,
    last_event_id: str | None,
    version: str,
    base_url: str | None,
) -> AsyncIterator[dict[str, str]]:
    """Server-sent events of the task's status and progress, ending after the terminal one.

    Each event carries the whole task; its id is the state's version, so a client that
    reconnects with Last-Event-ID gets the current state if it moved on, and never an old
    one. Woken by the same notifications as the sync waiters; no connection is held.
    """
    given = whole_number(last_event_id)  # an id this stream did not send counts as none
    seen = -1 if given is None else given
    assert res.notifications is not None, "event streams need the API's notification listener"
    with (
        res.notifications.subscribe(task_id) as changed,
        watched(res, task_id),
        _watch_key(res, caller, changed) as key,
    ):
        while True:
            changed.clear()
            if not await key.holds():  # revoked: say so, and end the stream
                error = {"error": {"message": REVOKED_MESSAGE, "code": Unauthorized.code}}
                yield {"event": "error", "data": orjson.dumps(error).decode()}
                return
            async with res.pool.acquire() as conn:
                row = await repository.get_task(conn, task_id, team_id=caller.team_id)
            if row is None:
                return
            state = event_version(row)
            if state > seen:
                seen = state
                yield {
                    "event": row["status"],
                    "id": str(state),
                    "data": orjson.dumps(
                        render_task(row, version=version, base_url=base_url)
                    ).decode(),
                }
            if row["dispatch_state"] == DispatchState.DONE:
                return
            # The key's tick: check it again. asyncio.timeout, not wait_for: Python 3.11's
            # wait_for can swallow a cancel arriving as the wait ends (a stream never closed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(key.wait_seconds(float("inf"))):
                    await changed.wait()
