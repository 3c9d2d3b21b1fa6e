"""Waking this process's waiters when a task changes (Postgres LISTEN/NOTIFY).

One dedicated connection per API process listens; each notification names a task id and
wakes only the waiters of this process for that task, so a thousand waiters cost a dict
entry each and no polling. If the listening connection drops, every waiter is woken to
re-read the database, and the listener reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

CHANNEL = "qgw_task_events"


class NotificationListener:
    """A Postgres LISTEN connection on `channel`: wakes subscribers of the payload (a task
    id: its changes, for waiters and the event stream), and hands every
    payload to `on_notify` when given (the worker uses that for webhook events)."""

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = CHANNEL,
        on_notify: Callable[[str], None] | None = None,
        also: dict[str, Callable[[str], None]] | None = None,
        on_up: Callable[[], None] | None = None,
        on_down: Callable[[], None] | None = None,
    ) -> None:
        """`also`: more channels on the same connection, each with its handler of a
        payload; `on_up`/`on_down`: called when the connection listens / is lost (what a
        handler was told may have been missed in between)."""
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._also = also or {}
        self._on_up = on_up or (lambda: None)
        self._on_down = on_down or (lambda: None)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="task-events-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=10)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._waiters.values())

    @contextlib.contextmanager
    def subscribe(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the task may have changed; unsubscribed on exit, always.

        Subscribe before reading the task, clear before each read: then no change can
        fall between a read and the wait.
        """
        event = asyncio.Event()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[task_id]

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in self._waiters.get(payload, ()):
            event.set()
        if self._on_notify is not None:
            self._on_notify(payload)

    def _lost(self, lost: asyncio.Event) -> None:
        self._on_down()  # at once: what arrives until the reconnect is unheard
        lost.set()

    def _wake_everyone(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: self._lost(lost))
                await conn.add_listener(self._channel, self._notified)
                for channel, handle in self._also.items():
                    await conn.add_listener(channel, _payload_to(handle))
                self._connected.set()
                self._on_up()
                delay = 0.5
                self._wake_everyone()  # changes may have been missed while disconnected
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                logger.warning("task event listener down", extra={"error": type(exc).__name__})
            finally:
                self._on_down()
                self._connected.clear()
                self._wake_everyone()
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _payload_to(handle: Callable[[str], None]) -> Callable[[Any, int, str, str], None]:
    return lambda _conn, _pid, _channel, payload: handle(payload)
