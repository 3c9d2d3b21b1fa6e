"""Webhook attempts are bounded and always recorded (issue 15, point 7): one deadline for
the whole attempt, a cancelled attempt logged and retried, DNS failures retried, any
Retry-After, per-destination concurrency, and a 410 that stops later events too. The
sender runs in this process against real receivers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.tasks.resources import Resources
from service.webhooks import repository
from service.webhooks.delivery import WebhookSender, parse_retry_after
from service.webhooks.ids import new_event_id
from service.webhooks.slots import DestinationSlots
from tests.factories import make_team, submit, wait_for
from tests.webhooks.receiver import running_receiver


def sender(res: Resources, **settings: Any) -> WebhookSender:
    return WebhookSender(res.settings.model_copy(update=settings))


async def event_for(
    client: httpx.AsyncClient, db: asyncpg.Connection, url: str, task_id: str | None = None
) -> str:
    """A due event of a real task of a new team, to `url`."""
    if task_id is None:
        team = await make_team(client)
        task_id = (await submit(client, team))["task_id"]
    team_id = await db.fetchval("SELECT team_id FROM tasks WHERE id = $1", task_id)
    event_id = new_event_id()
    await repository.insert_event(
        db,
        event_id=event_id,
        team_id=team_id,
        task_id=task_id,
        event="completed",
        url=url,
        payload={"event": "completed", "task_id": task_id},
    )
    return event_id


async def attempts(db: asyncpg.Connection, event_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM webhook_attempts WHERE event_id = $1 ORDER BY id", event_id
    )


async def event_row(db: asyncpg.Connection, event_id: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM webhook_events WHERE id = $1", event_id)


@contextlib.asynccontextmanager
async def dripping_receiver() -> AsyncIterator[str]:
    """A raw socket that answers 200 at once, then its body one byte every 0.2 s: each
    read is quick, the whole answer never ends."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(1000):
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(0.2)  # the drip itself, not a wait in the test
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


async def test_a_dripping_receiver_fails_at_the_attempt_deadline(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    async with dripping_receiver() as url:
        event_id = await event_for(client, db, url)
        outcome, delay, _ = await sender(res, webhook_timeout_seconds=1).deliver(res.pool, event_id)
    assert outcome == "retry" and delay is not None
    (attempt,) = await attempts(db, event_id)
    assert attempt["error"] == "timed out after 1 s" and attempt["finished_at"] is not None
    assert attempt["error_class"] == "timeout"
    assert (await event_row(db, event_id))["status"] == "pending"


async def test_a_cancelled_attempt_is_logged_and_retried_on_schedule(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    with running_receiver(default="hang") as receiver:
        event_id = await event_for(client, db, receiver.url)
        job = asyncio.create_task(res.webhooks.deliver(res.pool, event_id))

        await wait_for(lambda: attempts(db, event_id))  # the attempt has started
        job.cancel()  # as arq does to a job when the worker stops
        with pytest.raises(asyncio.CancelledError):
            await job
    (attempt,) = await attempts(db, event_id)
    assert attempt["error"] == "cancelled: the worker stopped" and attempt["finished_at"]
    assert attempt["error_class"] == "interrupted"
    event = await event_row(db, event_id)
    first_delay = res.settings.webhook_retry_delays[0]
    assert event["status"] == "pending" and event["leased_until"] is None
    assert event["next_attempt_at"] >= attempt["started_at"] + timedelta(
        seconds=first_delay * (1 - res.settings.webhook_retry_jitter)
    )


async def test_an_attempt_cut_short_by_a_crash_shows_as_interrupted(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    with running_receiver() as receiver:
        event_id = await event_for(client, db, receiver.url)
        # A worker claimed it, logged the start, and was killed (its lease ran out).
        await repository.claim_and_start(
            db, event_id, lease_seconds=0, started_at=datetime.now(UTC)
        )
        assert (await res.webhooks.deliver(res.pool, event_id))[0] == "delivered"
    first, second = await attempts(db, event_id)
    assert first["error"] == "interrupted: the worker stopped during the attempt"
    assert first["error_class"] == "interrupted"
    assert second["status_code"] == 200 and second["attempt"] == 2


async def test_a_name_that_does_not_resolve_is_retried_not_blocked(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    event_id = await event_for(client, db, "http://no-such-receiver.invalid/hook")
    outcome, delay, _ = await res.webhooks.deliver(res.pool, event_id)
    assert outcome == "retry" and delay is not None
    (attempt,) = await attempts(db, event_id)
    assert attempt["error"].startswith("DNS: host 'no-such-receiver.invalid' does not resolve")
    assert attempt["error_class"] == "dns_failure"


def test_retry_after_in_any_form_never_raises() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=120)
    assert parse_retry_after("120") == 120
    http_date = email.utils.format_datetime(soon, usegmt=True)
    assert 100 < (parse_retry_after(http_date) or 0) <= 120
    naive = email.utils.format_datetime(soon.replace(tzinfo=None))  # "-0000": no zone
    assert 100 < (parse_retry_after(naive) or 0) <= 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    for garbage in ("soon", "-5", "1.5e3", "", "Mon, 99 Foo 2026", "\x00", "9" * 400):
        parse_retry_after(garbage)  # a number or None, never an exception
    assert parse_retry_after("soon") is None and parse_retry_after("-5") is None


def now(check: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """`check` as a probe for wait_for."""

    async def probe() -> object:
        return check()

    return probe


def slots(**bounds: Any) -> DestinationSlots:
    return DestinationSlots(**{"max_waiting": 2, "wait_seconds": 5.0, **bounds})


def test_destination_slots_cap_each_destination_and_the_whole() -> None:
    capped = slots(total=3, per_destination=2)
    assert capped.take("a") and capped.take("a") and not capped.take("a")
    assert capped.take("b") and not capped.take("c")  # the process's cap
    capped.give_back("a")
    assert capped.take("c") and capped.open == {"a": 1, "b": 1, "c": 1}


async def test_an_attempt_over_the_cap_waits_its_turn_for_a_bounded_time() -> None:
    capped = slots(total=4, per_destination=1, max_waiting=2)
    assert capped.take("a")
    first = asyncio.create_task(capped.wait("a"))
    second = asyncio.create_task(capped.wait("a"))
    await wait_for(now(lambda: capped.waiting_for.get("a") == 2))
    assert await capped.wait("a") is False  # a third waiter is refused at once
    assert not capped.take("a")  # nor can a newcomer jump the queue
    capped.give_back("a")
    assert await first is True and not second.done()  # first come, first served
    capped.give_back("a")
    assert await second is True and capped.open == {"a": 1}
    # A waiter that is not served in time gets no slot, and leaves the queue.
    hurried = slots(total=4, per_destination=1, wait_seconds=0.05)
    assert hurried.take("a") and await hurried.wait("a") is False
    assert hurried.waiting == {} and hurried.open == {"a": 1}


async def test_a_slot_freed_in_all_goes_to_a_waiter_of_another_destination() -> None:
    capped = slots(total=1, per_destination=1)
    assert capped.take("a")
    waiter = asyncio.create_task(capped.wait("b"))
    await wait_for(now(lambda: "b" in capped.waiting_for))
    capped.give_back("a")
    assert await waiter is True and capped.open == {"b": 1}


async def test_a_waiting_attempt_is_made_once_the_slot_frees(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    one_at_a_time = sender(res, webhook_max_concurrency_per_destination=1)
    with running_receiver(script=["hang"]) as receiver:
        stuck = await event_for(client, db, receiver.url)
        waiting = await event_for(client, db, receiver.url)
        first = asyncio.create_task(one_at_a_time.deliver(res.pool, stuck))
        await wait_for(lambda: attempts(db, stuck))
        second = asyncio.create_task(one_at_a_time.deliver(res.pool, waiting))
        await wait_for(now(lambda: one_at_a_time.slots.waiting))
        receiver.release.set()
        assert (await first)[0] == "delivered" and (await second)[0] == "delivered"
        delivered = await event_row(db, waiting)
        assert delivered["attempts"] == 1 and len(await attempts(db, waiting)) == 1
    await one_at_a_time.aclose()


async def test_a_busy_destination_defers_without_spending_an_attempt(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    one_at_a_time = sender(res, webhook_max_concurrency_per_destination=1)
    with running_receiver(default="hang") as receiver, running_receiver() as other:
        stuck = await event_for(client, db, receiver.url)
        waiting = await event_for(client, db, receiver.url)
        elsewhere = await event_for(client, db, other.url)
        job = asyncio.create_task(one_at_a_time.deliver(res.pool, stuck))
        await wait_for(lambda: attempts(db, stuck))
        outcome, delay, _ = await one_at_a_time.deliver(res.pool, waiting)
        assert outcome == "deferred" and delay is not None and delay > 0
        deferred = await event_row(db, waiting)
        assert deferred["attempts"] == 0 and deferred["status"] == "pending"
        assert await attempts(db, waiting) == []
        # Another destination is not held up by it.
        assert (await one_at_a_time.deliver(res.pool, elsewhere))[0] == "delivered"
        receiver.release.set()
        assert (await job)[0] == "delivered"
    await one_at_a_time.aclose()


async def test_a_410_stops_that_tasks_later_events_to_that_url(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    with running_receiver(default=410) as gone, running_receiver() as alive:
        first = await event_for(client, db, gone.url)
        task_id = await db.fetchval("SELECT task_id FROM webhook_events WHERE id = $1", first)
        assert (await res.webhooks.deliver(res.pool, first))[0] == "stopped"
        later = await event_for(client, db, gone.url, task_id=task_id)
        assert (await res.webhooks.deliver(res.pool, later))[0] == "stopped"
        assert len(gone.received) == 1  # the later event was never sent
        stopped = await event_row(db, later)
        assert stopped["status"] == "stopped" and stopped["attempts"] == 0
        # Another URL of the same task still gets its events.
        other = await event_for(client, db, alive.url, task_id=task_id)
        assert (await res.webhooks.deliver(res.pool, other))[0] == "delivered"


@pytest.fixture
def two_address_name() -> Iterator[str]:
    """A name with two addresses in /etc/hosts (real resolution, the system resolver's
    order): 127.0.0.1, where nothing will listen, sorts first; 127.0.0.9 second."""
    hosts = Path("/etc/hosts")
    if not os.access(hosts, os.W_OK):
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: /etc/hosts must be writable for this test")
        pytest.skip("needs a writable /etc/hosts (root)")
    name = f"qgw-{uuid.uuid4().hex[:8]}.test"
    original = hosts.read_text()
    hosts.write_text(original + f"\n127.0.0.9 {name}\n127.0.0.1 {name}\n")
    try:
        yield name
    finally:
        hosts.write_text(original)


async def test_a_receiver_with_several_addresses_is_tried_on_the_next(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, two_address_name: str
) -> None:
    with running_receiver(host="127.0.0.9") as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        event_id = await event_for(client, db, f"http://{two_address_name}:{port}/hook")
        assert (await res.webhooks.deliver(res.pool, event_id))[0] == "delivered"
    assert len(receiver.received) == 1
    assert receiver.received[0].headers["host"] == f"{two_address_name}:{port}"
