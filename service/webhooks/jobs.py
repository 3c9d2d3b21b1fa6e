"""arq entry points of webhook delivery, and the first attempt made without a job."""

from __future__ import annotations

import uuid
from typing import Any

from service.webhooks import repository as webhooks
from service.webhooks.queue import enqueue_delivery


async def deliver_webhook(ctx: dict[str, Any], event_id: str) -> str:
    return await attempt_and_schedule(ctx["resources"], event_id)


async def attempt_and_schedule(res: Any, event_id: str) -> str:
    """One attempt at the event, and the job of its next attempt if it needs one. `res` is
    the worker's tasks.resources.Resources."""
    outcome: str
    outcome, delay, attempt = await res.webhooks.deliver(res.pool, event_id)
    if delay is not None:
        # A deferred event made no attempt: its next job needs an id of its own.
        tag = f"{attempt}-deferred-{uuid.uuid4().hex[:8]}" if outcome == "deferred" else attempt
        await enqueue_delivery(
            res.redis, res.settings.arq_queue_name, event_id, tag, defer_by=delay
        )
    return outcome


def parse_notification(payload: str) -> tuple[str, str]:
    """(event id, team id) from an event's NOTIFY payload "<event id> <team id>" (migration
    0018; before it the payload was the id alone, and its team is "")."""
    event_id, _, team = payload.partition(" ")
    return event_id, team


async def first_attempt(res: Any, event_id: str, team: str = "") -> str:
    """An event has just committed (its NOTIFY, which every worker hears): its first
    attempt is made here, in this process, without an arq job, when the process has room
    (WebhookSender.first_attempts, which shares its turns fairly across teams); otherwise
    it is queued as a job, which the job id makes one job whichever workers enqueue it.
    Where several workers attempt it, the claim's lease lets one through and the others
    skip it.

    Why not a job each time: a job is about ten Redis round trips (enqueue, start, run,
    finish), a large share of a delivery's CPU in the worker (bench/webhooks.py profiled
    under py-spy; docs/decisions/012-webhook-slots.md)."""
    first_attempts = res.webhooks.first_attempts
    if first_attempts.full():
        await enqueue_delivery(res.redis, res.settings.arq_queue_name, event_id, 0)
        return "queued"
    async with first_attempts.turn(team):
        return await attempt_and_schedule(res, event_id)


async def sweep_webhooks(ctx: dict[str, Any]) -> int:
    """Enqueue every event due a while that no worker holds: after a lost notification, a
    flushed Redis or a worker that died mid-attempt (its lease ran out)."""
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
    async with res.pool.acquire() as conn:
        due = await webhooks.due(conn, limit=1000)
    for row in due:
        await enqueue_delivery(res.redis, res.settings.arq_queue_name, row["id"], row["attempts"])
    return len(due)
