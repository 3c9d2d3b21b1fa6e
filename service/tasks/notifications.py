"""Waking this process's waiters when a task changes (Postgres LISTEN/NOTIFY).

One dedicated connection per API process listens; each notification names a task id and
wakes only the waiters of this process for that task, so a thousand waiters cost a dict
entry each and no polling. If the listening connection drops, every waiter is woken to
re-read the database, and the listener reconnects.

A connection can also go silent without dropping (a frozen server, a lost route: the
socket stays open and nothing arrives). So the listener proves itself every
`check_seconds` with a NOTIFY to itself on a channel of its own; a round trip that does
not come back within `check_seconds` counts as a drop (`on_down`, reconnect), and each
one that does is reported (`on_alive`), which is what keeps the key cache trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

# Task changes: migration 0002's trigger sends each changed task's id here.
CHANNEL = "qgw_task_events"
# The listening connection's application_name (pg_stat_activity shows which it is).
LISTENER_NAME = "qgw-listener"


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
        on_alive: Callable[[], None] | None = None,
        check_seconds: float = 5.0,
    ) -> None:
        """`also`: more channels on the same connection, each with its handler of a
        payload; `on_up`/`on_down`: called when the connection listens / is lost (what a
        handler was told may have been missed in between); `on_alive`: after each round
        trip that proved it still hears (every `check_seconds`)."""
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._also = also or {}
        self._on_up = on_up or (lambda: None)
        self._on_down = on_down or (lambda: None)
        self._on_alive = on_alive or (lambda: None)
        self._check_seconds = check_seconds
        # This connection's own channel for its round trips (no other process hears them).
        self._ping_channel = f"qgw_listener_{secrets.token_hex(8)}"
        self._pong: tuple[str, asyncio.Event] | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="notification-listener")
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

    def _ponged(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._pong is not None and self._pong[0] == payload:
            self._pong[1].set()

    async def _round_trip(self, conn: asyncpg.Connection) -> bool:
        """NOTIFY this connection's own channel and hear it come back, within the bound."""
        nonce = secrets.token_hex(8)
        back = asyncio.Event()
        self._pong = (nonce, back)
        try:
            async with asyncio.timeout(self._check_seconds):
                await conn.execute("SELECT pg_notify($1, $2)", self._ping_channel, nonce)
                await back.wait()
            return True
        except Exception:  # whatever went wrong, it is not proven: reconnect, never die
            return False
        finally:
            self._pong = None

    async def _hear_until_lost(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Until the connection drops or a round trip fails (silently half-open)."""
        while not lost.is_set():
            # asyncio.timeout, not wait_for, which in Python 3.11 can swallow close()'s cancel.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_seconds):
                    await lost.wait()
            if lost.is_set():
                return
            if not await self._round_trip(conn):
                logger.warning(
                    "notification listener silent: reconnecting",
                    extra={"bound_seconds": self._check_seconds},
                )
                return
            self._on_alive()

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
                lost = asyncio.Event()
                # Bounded: a server that went silent must not hold the set-up for ever.
                async with asyncio.timeout(max(self._check_seconds, 5.0)):
                    conn = await asyncpg.connect(
                        self._dsn, server_settings={"application_name": LISTENER_NAME}
                    )
                    conn.add_termination_listener(lambda _c, lost=lost: self._lost(lost))
                    await conn.add_listener(self._ping_channel, self._ponged)
                    await conn.add_listener(self._channel, self._notified)
                    for channel, handle in self._also.items():
                        await conn.add_listener(channel, _payload_to(handle))
                self._connected.set()
                self._on_up()
                delay = 0.5
                self._wake_everyone()  # changes may have been missed while disconnected
                await self._hear_until_lost(conn, lost)
            except Exception as exc:  # down, refused, timed out: try again; never die
                logger.warning("notification listener down", extra={"error": type(exc).__name__})
            finally:
                self._on_down()
                self._connected.clear()
                self._wake_everyone()
                if conn is not None and not conn.is_closed():
                    # A silent server may never answer a polite close: bounded, then cut.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2)
                    if not conn.is_closed():
                        conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _payload_to(handle: Callable[[str], None]) -> Callable[[Any, int, str, str], None]:
    return lambda _conn, _pid, _channel, payload: handle(payload)
