"""The callers this process has authenticated, by key hash, so that a hot request skips
the database round trip that authenticating it costs.

Why: authenticating was one pooled connection and one query per request, a visible share
of the API process's CPU under load (bench/cpu.py; docs/decisions/007-key-cache.md).

It is only trusted while the process's LISTEN connection is up (`trust`/`distrust`, from
the listener that tasks/resources.py sets up): a trigger NOTIFYs `qgw_auth_changes` on
any change to a key or a team (migration 0013), which empties it, so a revoked key or a
changed limit applies to the next request of every process. A process that cannot hear
those notifications reads the database every time. A connection that went silent without
dropping is caught by the listener's round trips; and trust is a lease (`trust_seconds`)
that only those round trips renew (`proven_alive`), so a listener that cannot even report
stops it too. Entries also expire after `ttl_seconds`, a backstop only. Unknown keys are
never cached: a new key works at once, and guessing fills no memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

from cachetools import TTLCache

AUTH_CHANNEL = "qgw_auth_changes"
V = TypeVar("V")


class KeyCache(Generic[V]):
    def __init__(
        self,
        *,
        ttl_seconds: float = 60.0,
        max_keys: int = 10_000,
        trust_seconds: float | None = None,
    ) -> None:
        self._entries: TTLCache[bytes, V] = TTLCache(maxsize=max_keys, ttl=ttl_seconds)
        self._trusted = False
        # None: trusted from `trust` until `distrust`; else until this long after the
        # last proof the listener still hears (`trust`, `proven_alive`).
        self._trust_seconds = trust_seconds
        self._trusted_until = 0.0
        # Bumped whenever the entries are forgotten: a read that began before a change
        # (`put(..., read_at=...)`) must not store what the change made stale.
        self.generation = 0
        # Woken whenever the entries are forgotten: open streams and waits re-check their
        # key then (tasks/waiting.py), so a revocation ends them too.
        self._watchers: set[asyncio.Event] = set()

    @property
    def trusted(self) -> bool:
        if not self._trusted:
            return False
        if self._trust_seconds is not None and time.monotonic() >= self._trusted_until:
            self.distrust()  # the lease ran out: nothing proves changes are heard
            return False
        return True

    def get(self, key_hash: bytes) -> V | None:
        return self._entries.get(key_hash) if self.trusted else None

    def put(self, key_hash: bytes, value: V, *, read_at: int) -> None:
        """Keep `value`, read from the database when `generation` was `read_at`."""
        if self.trusted and read_at == self.generation:
            self._entries[key_hash] = value

    def forget_all(self, _payload: str = "") -> None:
        self.generation += 1
        self._entries.clear()
        for event in self._watchers:
            event.set()

    @contextlib.contextmanager
    def watch(self, event: asyncio.Event) -> Iterator[None]:
        """Set `event` whenever a key or team may have changed (or the changes can no
        longer be heard), while inside."""
        self._watchers.add(event)
        try:
            yield
        finally:
            self._watchers.discard(event)

    def trust(self) -> None:
        """The LISTEN connection is up: changes from now on will be heard."""
        self.forget_all()  # any made while it was down were not
        self._trusted = True
        self._renew()

    def proven_alive(self) -> None:
        """The listener heard its own round trip: every change before it was heard too."""
        if self._trusted:
            self._renew()
        else:  # trust had lapsed: start afresh, as after a reconnect
            self.trust()

    def _renew(self) -> None:
        if self._trust_seconds is not None:
            self._trusted_until = time.monotonic() + self._trust_seconds

    def distrust(self) -> None:
        self._trusted = False
        self.forget_all()

    def __len__(self) -> int:
        return len(self._entries)
