"""Whether the key behind an open event stream or wait still stands: a revoked (or
expired) key ends them promptly, not when they would have ended anyway.

The process's key cache is told of every change to a key or team (its NOTIFY, or its
listener going down) and wakes the watch, which then re-reads the key; between changes
the key is re-read at least every `every` seconds, a backstop for a change that could
not be heard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg

from service.teams import repository
from service.teams.key_cache import KeyCache
from service.teams.service import Caller

REVOKED_MESSAGE = "the API key was revoked or has expired"


class KeyWatch:
    def __init__(
        self, pool: asyncpg.Pool, keys: KeyCache[Any], caller: Caller, *, every: float
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._caller = caller
        self._every = every
        self._loop = asyncio.get_running_loop()
        self._checked_generation = keys.generation
        self._next_check = self._loop.time() + every

    def wait_seconds(self, remaining: float) -> float:
        """How long the holder may wait before it must ask `holds` again."""
        return max(0.0, min(remaining, self._next_check - self._loop.time()))

    async def holds(self) -> bool:
        """False once the key is revoked or expired (read when a change was announced or
        the backstop is due; otherwise no query)."""
        changed = self._keys.generation != self._checked_generation
        if not changed and self._loop.time() < self._next_check:
            return True
        self._checked_generation = self._keys.generation
        self._next_check = self._loop.time() + self._every
        async with self._pool.acquire() as conn:
            return await repository.key_is_live(conn, self._caller.key_id)


@contextlib.contextmanager
def watch_key(
    pool: asyncpg.Pool, keys: KeyCache[Any], caller: Caller, *, every: float, wake: asyncio.Event
) -> Iterator[KeyWatch]:
    """A KeyWatch for `caller`'s key; `wake` is set when a key or team may have changed."""
    with keys.watch(wake):
        yield KeyWatch(pool, keys, caller, every=every)
