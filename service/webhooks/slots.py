"""How many webhook attempts one worker process has open: in all, per destination and per
team, shared fairly across teams.

One team's slow or dead receivers cannot take every slot from other teams' deliveries or
from the task jobs: at most `per_destination` attempts are open to one destination
(scheme, host and port), `per_team` for one team (by default half of `total`, so another
team always finds room even while every attempt of the first hangs) and `total` in all.
A slot that comes free goes to the waiting team that holds the fewest, first come first
served within a team; a newcomer takes a free slot at once only when no waiter could
have it (every waiter is granted as soon as it can be, so one free for the newcomer is
one no waiter can use).

An attempt over a cap waits in the process for a slot, but only while few others wait
(`max_waiting` per destination, `per_team` per team, `total` in all, though a team's
first waiter is always let in) and for at most `wait_seconds`; otherwise its event is put
off and comes back as a new job. Waiting is what keeps a burst to one fast receiver
moving: putting every attempt over the cap off by a second held a burst to a fraction of
what the worker could send and the p99 at a steady rate to seconds, with the worker mostly
idle (bench/webhooks.py; docs/decisions/012-webhook-slots.md). The bounds keep what a dead
receiver can hold to `per_destination + max_waiting` job slots.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    destination: str
    order: int
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DestinationSlots:
    def __init__(
        self,
        *,
        total: int,
        per_destination: int,
        max_waiting: int,
        wait_seconds: float,
        per_team: int | None = None,
    ) -> None:
        self.total, self.per_destination = total, per_destination
        self.per_team = per_team if per_team is not None else total
        self.max_waiting, self.wait_seconds = max_waiting, wait_seconds
        self.open: dict[str, int] = {}
        self.open_by_team: dict[str, int] = {}
        self.waiting: dict[str, deque[_Waiter]] = {}  # by team, oldest first
        self.waiting_for: dict[str, int] = {}  # how many wait, by destination
        self._open_in_all = 0
        self._waiting_in_all = 0
        self._order = itertools.count()

    def _free(self, destination: str, team: str) -> bool:
        return (
            self._open_in_all < self.total
            and self.open.get(destination, 0) < self.per_destination
            and self.open_by_team.get(team, 0) < self.per_team
        )

    def _grant(self, destination: str, team: str) -> None:
        self.open[destination] = self.open.get(destination, 0) + 1
        self.open_by_team[team] = self.open_by_team.get(team, 0) + 1
        self._open_in_all += 1

    def take(self, destination: str, team: str = "") -> bool:
        """A slot now, if one is free for this destination and team (no waiter could use
        it: waiters are granted the moment they can be)."""
        if not self._free(destination, team):
            return False
        self._grant(destination, team)
        return True

    async def wait(self, destination: str, team: str = "") -> bool:
        """A slot within `wait_seconds`; False at once when too many already wait."""
        if self.take(destination, team):
            return True
        queue = self.waiting.get(team)
        if (
            self.waiting_for.get(destination, 0) >= self.max_waiting
            or (queue is not None and len(queue) >= self.per_team)
            or (queue and self._waiting_in_all >= self.total)
        ):
            return False
        waiter = _Waiter(destination, next(self._order))
        self.waiting.setdefault(team, deque()).append(waiter)
        self.waiting_for[destination] = self.waiting_for.get(destination, 0) + 1
        self._waiting_in_all += 1
        try:
            # shield: a timeout must not cancel a grant made in the same loop iteration.
            await asyncio.wait_for(asyncio.shield(waiter.granted), self.wait_seconds)
            return True
        except TimeoutError:
            return waiter.granted.done()  # granted just as the time ran out: the slot is ours
        except asyncio.CancelledError:
            if waiter.granted.done():
                self.give_back(destination, team)
            raise
        finally:
            if not waiter.granted.done():
                self._forget(team, waiter)

    def _forget(self, team: str, waiter: _Waiter) -> None:
        queue = self.waiting[team]
        queue.remove(waiter)
        if not queue:
            del self.waiting[team]
        left = self.waiting_for[waiter.destination] - 1
        if left:
            self.waiting_for[waiter.destination] = left
        else:
            del self.waiting_for[waiter.destination]
        self._waiting_in_all -= 1

    def give_back(self, destination: str, team: str = "") -> None:
        for counts, key in ((self.open, destination), (self.open_by_team, team)):
            left = counts.get(key, 1) - 1
            if left:
                counts[key] = left
            else:
                counts.pop(key, None)
        self._open_in_all -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Free slots go, one at a time, to the waiting team holding the fewest (then the
        longest waiter): its oldest waiter whose destination has room."""
        while self._open_in_all < self.total:
            best: tuple[int, int, str, _Waiter] | None = None
            for team, queue in self.waiting.items():
                held = self.open_by_team.get(team, 0)
                if held >= self.per_team or (best is not None and held > best[0]):
                    continue
                for waiter in queue:
                    if self.open.get(waiter.destination, 0) < self.per_destination:
                        if best is None or (held, waiter.order) < best[:2]:
                            best = (held, waiter.order, team, waiter)
                        break
            if best is None:
                return
            _, _, team, waiter = best
            self._forget(team, waiter)
            self._grant(waiter.destination, team)
            waiter.granted.set_result(None)


class WaitingRoom:
    """At most `running` inside at a time, `per_team` of one team, and at most `queued`
    more waiting their turn: `full()` says when a newcomer should go elsewhere (the arq
    queue) instead. A turn that comes free goes to the waiting team with the fewest
    inside (then the longest waiter), so a team with a thousand events queued does not
    make another team's one event wait behind them."""

    def __init__(self, *, running: int, queued: int, per_team: int | None = None) -> None:
        self._running, self._per_team = running, per_team if per_team is not None else running
        self._limit = running + queued
        self._present = 0  # inside or waiting
        self._inside = 0
        self._inside_by_team: dict[str, int] = {}
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()

    def full(self) -> bool:
        return self._present >= self._limit

    def waiting(self, team: str) -> int:
        """How many of the team's wait for a turn."""
        return len(self._waiting.get(team, ()))

    def _can_enter(self, team: str) -> bool:
        return self._inside < self._running and self._inside_by_team.get(team, 0) < self._per_team

    def _enter(self, team: str) -> None:
        self._inside += 1
        self._inside_by_team[team] = self._inside_by_team.get(team, 0) + 1

    def _leave(self, team: str) -> None:
        self._inside -= 1
        left = self._inside_by_team[team] - 1
        if left:
            self._inside_by_team[team] = left
        else:
            del self._inside_by_team[team]
        self._hand_on()

    def _hand_on(self) -> None:
        while self._inside < self._running:
            ready = [
                (self._inside_by_team.get(team, 0), queue[0][0], team)
                for team, queue in self._waiting.items()
                if self._inside_by_team.get(team, 0) < self._per_team
            ]
            if not ready:
                return
            _, _, team = min(ready)
            queue = self._waiting[team]
            _, granted = queue.popleft()
            if not queue:
                del self._waiting[team]
            self._enter(team)
            granted.set_result(None)

    @asynccontextmanager
    async def turn(self, team: str = "") -> AsyncIterator[None]:
        self._present += 1  # before the first await: full() and entering are one step
        try:
            if self._can_enter(team):  # no waiter could have it: they enter when they can
                self._enter(team)
            else:
                await self._wait_turn(team)
            try:
                yield
            finally:
                self._leave(team)
        finally:
            self._present -= 1

    async def _wait_turn(self, team: str) -> None:
        granted = asyncio.get_running_loop().create_future()
        entry = (next(self._order), granted)
        self._waiting.setdefault(team, deque()).append(entry)
        try:
            await asyncio.shield(granted)  # a cancelled waiter must not lose a turn given
        except asyncio.CancelledError:
            if granted.done():
                self._leave(team)  # let in just as it was cancelled: give the turn on
            else:
                queue = self._waiting[team]
                queue.remove(entry)
                if not queue:
                    del self._waiting[team]
            raise
