"""Retry timing, Retry-After, redirects and progress throttling, without a worker process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import asyncpg
import httpx

from service.config import Settings
from service.tasks import announce
from service.tasks.resources import Resources
from service.webhooks import jobs
from service.webhooks.delivery import WebhookSender, parse_retry_after
from tests.factories import make_team, submit
from tests.webhooks.receiver import running_receiver


def sender(settings: Settings, **overrides: object) -> WebhookSender:
    return WebhookSender(settings.model_copy(update=overrides))


async def test_the_default_schedule_is_svix_like_with_jitter(settings: Settings) -> None:
    defaults = Settings()
    webhooks = sender(settings, webhook_retry_schedule=defaults.webhook_retry_schedule)
    try:
        expected = [5, 300, 1800, 7200, 18000, 36000, 36000]
        for attempt, base in enumerate(expected, start=1):
            delay = webhooks.next_delay(attempt, None)
            assert delay is not None and base * 0.8 <= delay <= base * 1.2
        assert webhooks.next_delay(len(expected) + 1, None) is None  # used up: failed
        # Retry-After wins when longer, up to the cap.
        assert webhooks.next_delay(1, 120) == 120
        assert webhooks.next_delay(1, 10**9) == defaults.webhook_max_retry_after_seconds
    finally:
        await webhooks.aclose()


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("30") == 30
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    parsed = parse_retry_after(later)
    assert parsed is not None and 85 <= parsed <= 91
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    with running_receiver(script=[302]) as receiver:
        task = await submit(client, team, callback_url=receiver.url)
        async with db.transaction():
            await db.execute(
                "UPDATE tasks SET status = 'completed', dispatch_state = 'done' WHERE id = $1",
                task["task_id"],
            )
            row = await db.fetchrow("SELECT * FROM tasks WHERE id = $1", task["task_id"])
            event_id = await announce.task_event(db, row, "completed")
        assert event_id is not None
        assert await jobs.deliver_webhook({"resources": res}, event_id) == "retry"
        assert [r.answered for r in receiver.received] == [302]  # once, not followed
    attempt = await db.fetchrow("SELECT * FROM webhook_attempts WHERE event_id = $1", event_id)
    assert attempt["status_code"] == 302 and attempt["error"] == "HTTP 302"


async def test_processing_events_are_throttled_per_task(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    task = await submit(
        client, team, callback_url="http://127.0.0.1:9/hook", callback_events=["processing"]
    )
    await db.execute("UPDATE tasks SET status = 'processing' WHERE id = $1", task["task_id"])
    first = await announce.progress_event(db, task["task_id"], interval_seconds=60)
    second = await announce.progress_event(db, task["task_id"], interval_seconds=60)
    assert first is not None and second is None
    assert await announce.progress_event(db, task["task_id"], interval_seconds=0) is not None
