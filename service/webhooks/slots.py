"""How many webhook attempts one worker process has open, in all and per destination.

One team's slow or dead receivers cannot take every job slot from other teams' deliveries
or from the task jobs: at most `per_destination` attempts are open to one destination
(scheme, host and port) and `total` in all.

An attempt over a cap waits in the process for a slot, first come first served, but only
while few others wait (`max_waiting` per destination, `total` in all) and for at most
`wait_seconds`; otherwise its event is put off and comes back as a new job. Waiting is
what keeps a burst to one fast receiver moving: putting every attempt over the cap off by
a second made 1,000 events finished at once arrive at 192/s and the p99 at 100 events/s
1.5 s (bench/webhooks.py, 2026-12-03), with the worker mostly idle. The bounds keep what a
dead receiver can hold to `per_destination + max_waiting` job slots.
"""

from __future__ import annotations

import asyncio
from collections import deque


class DestinationSlots:
    def __init__(
        self, *, total: int, per_destination: int, max_waiting: int, wait_seconds: float
    ) -> None:
        self.total, self.per_destination = total, per_destination
        self.max_waiting, self.wait_seconds = max_waiting, wait_seconds
        self.open: dict[str, int] = {}
        self.waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._open_in_all = 0
        self._waiting_in_all = 0

    def _free(self, destination: str) -> bool:
        return (
            self._open_in_all < self.total and self.open.get(destination, 0) < self.per_destination
        )

    def _grant(self, destination: str) -> None:
        self.open[destination] = self.open.get(destination, 0) + 1
        self._open_in_all += 1

    def take(self, destination: str) -> bool:
        """A slot now, if one is free and nobody is waiting for this destination."""
        if self.waiting.get(destination) or not self._free(destination):
            return False
        self._grant(destination)
        return True

    async def wait(self, destination: str) -> bool:
        """A slot within `wait_seconds`; False at once when too many already wait."""
        if self.take(destination):
            return True
        queue = self.waiting.setdefault(destination, deque())
        if len(queue) >= self.max_waiting or self._waiting_in_all >= self.total:
            if not queue:
                del self.waiting[destination]
            return False
        granted = asyncio.get_running_loop().create_future()
        queue.append(granted)
        self._waiting_in_all += 1
        try:
            # shield: a timeout must not cancel a grant made in the same loop iteration.
            await asyncio.wait_for(asyncio.shield(granted), self.wait_seconds)
            return True
        except TimeoutError:
            return granted.done()  # granted just as the time ran out: the slot is ours
        except asyncio.CancelledError:
            if granted.done():
                self.give_back(destination)
            raise
        finally:
            if not granted.done():
                queue.remove(granted)
                self._waiting_in_all -= 1
                if not queue:
                    self.waiting.pop(destination, None)

    def give_back(self, destination: str) -> None:
        left = self.open.get(destination, 1) - 1
        if left:
            self.open[destination] = left
        else:
            self.open.pop(destination, None)
        self._open_in_all -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Free slots go to the longest waiters of any destination they are free for."""
        for destination, queue in list(self.waiting.items()):
            while queue and self._free(destination):
                self._grant(destination)
                self._waiting_in_all -= 1
                queue.popleft().set_result(None)
            if not queue:
                del self.waiting[destination]
            if self._open_in_all >= self.total:
                return


class WaitingRoom:
    """At most `running` inside at a time, and at most `queued` more waiting their turn:
    `full()` says when a newcomer should go elsewhere (the arq queue) instead."""

    def __init__(self, *, running: int, queued: int) -> None:
        self._turns = asyncio.Semaphore(running)
        self._limit = running + queued
        self._inside = 0

    def full(self) -> bool:
        return self._inside >= self._limit

    async def __aenter__(self) -> None:
        self._inside += 1  # before the first await: full() and entering are one step
        try:
            await self._turns.acquire()
        except BaseException:
            self._inside -= 1
            raise

    async def __aexit__(self, *_: object) -> None:
        self._turns.release()
        self._inside -= 1
