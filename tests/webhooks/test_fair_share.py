"""Webhook attempt slots are shared fairly across teams (issue 31, point 6): one team's many
events towards slow receivers cannot make another team's webhook wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from service.webhooks.slots import DestinationSlots, WaitingRoom
from tests.factories import make_team, submit, until, wait_for
from tests.webhooks.receiver import Receiver, running_receiver

pytestmark = pytest.mark.usefixtures("api_server")


def test_one_team_holds_at_most_its_share_even_when_alone() -> None:
    slots = DestinationSlots(
        total=4, per_destination=4, per_team=2, max_waiting=8, wait_seconds=5.0
    )
    assert slots.take("a", "busy") and slots.take("b", "busy")
    assert not slots.take("c", "busy")  # its share, though two slots are free
    assert slots.take("c", "quiet")  # another team finds room at once


async def test_a_freed_slot_goes_to_the_waiting_team_holding_the_fewest() -> None:
    slots = DestinationSlots(
        total=3, per_destination=3, per_team=3, max_waiting=8, wait_seconds=5.0
    )
    for destination in "abc":
        assert slots.take(destination, "busy")
    busy_waiter = asyncio.create_task(slots.wait("d", "busy"))
    await until(lambda: "d" in slots.waiting_for)
    quiet_waiter = asyncio.create_task(slots.wait("e", "quiet"))  # came later
    await until(lambda: "e" in slots.waiting_for)
    slots.give_back("a", "busy")
    assert await quiet_waiter is True and not busy_waiter.done()
    slots.give_back("b", "busy")
    assert await busy_waiter is True
    assert slots.open_by_team == {"busy": 2, "quiet": 1}


async def test_turns_in_the_waiting_room_go_to_the_team_with_the_fewest_inside() -> None:
    room = WaitingRoom(running=2, per_team=2, queued=100)
    release = asyncio.Event()
    order: list[str] = []

    async def attempt(team: str, name: str) -> None:
        async with room.turn(team):
            order.append(name)
            await release.wait()

    busy = [asyncio.create_task(attempt("busy", f"busy-{i}")) for i in range(5)]
    await until(lambda: len(order) == 2)
    quiet = asyncio.create_task(attempt("quiet", "quiet"))
    await until(lambda: room.waiting("quiet") == 1)  # queued behind the busy team's three
    release.set()
    await asyncio.gather(*busy, quiet)
    assert order.index("quiet") == 2  # the first turn that came free, not the sixth


async def test_a_team_under_its_share_enters_the_room_at_once() -> None:
    room = WaitingRoom(running=4, per_team=2, queued=100)
    async with room.turn("busy"), room.turn("busy"):
        entered = asyncio.create_task(_enter_and_leave(room, "quiet"))
        await asyncio.wait_for(entered, 5)  # not behind the busy team


async def _enter_and_leave(room: WaitingRoom, team: str) -> None:
    async with room.turn(team):
        pass


def arrived(receivers: list[Receiver], n: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return sum(r.arrived for r in receivers) >= n

    return probe


def received(receivers: list[Receiver], n: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return sum(len(r.received) for r in receivers) >= n

    return probe


async def test_one_teams_slow_receivers_do_not_hold_up_another_teams_webhook(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    busy, quiet = await make_team(client), await make_team(client)
    # Four slots, two per destination: the busy team's three receivers could hold them all.
    start_worker(
        webhook_max_concurrent_attempts=4,
        webhook_max_concurrency_per_destination=2,
        webhook_timeout_seconds=60,
    )
    with (
        running_receiver(default="hang") as slow_a,
        running_receiver(default="hang") as slow_b,
        running_receiver(default="hang") as slow_c,
        running_receiver() as fast,
    ):
        slow = [slow_a, slow_b, slow_c]
        for i in range(9):
            await submit(client, busy, callback_url=slow[i % 3].url)
        await wait_for(arrived(slow, 2))  # the busy team's attempts hang at its receivers
        await submit(client, quiet, callback_url=fast.url)
        await wait_for(received([fast], 1), timeout=20)
        # Delivered while every slow receiver still holds what it got: none has answered.
        assert sum(len(r.received) for r in slow) == 0
        for receiver in slow:
            receiver.release.set()
        await wait_for(received(slow, 9), timeout=40)  # and the busy team loses nothing
