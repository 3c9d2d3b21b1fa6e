"""arq entry points of webhook delivery."""

from __future__ import annotations

import uuid
from typing import Any

from service.webhooks import repository as webhooks
from service.webhooks.queue import enqueue_delivery


async def deliver_webhook(ctx: dict[str, Any], event_id: str) -> str:
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
    outcome: str
    outcome, delay, attempt = await res.webhooks.deliver(res.pool, event_id)
    if delay is not None:
        # A deferred event made no attempt: its next job needs an id of its own.
        tag = f"{attempt}-deferred-{uuid.uuid4().hex[:8]}" if outcome == "deferred" else attempt
        await enqueue_delivery(
            res.redis, res.settings.arq_queue_name, event_id, tag, defer_by=delay
        )
    return outcome


async def sweep_webhooks(ctx: dict[str, Any]) -> int:
    """Enqueue every due event no worker holds: after a lost notification, a flushed Redis
    or a worker that died mid-attempt (its lease ran out)."""
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
    async with res.pool.acquire() as conn:
        due = await webhooks.due(conn, limit=1000)
    for row in due:
        await enqueue_delivery(res.redis, res.settings.arq_queue_name, row["id"], row["attempts"])
    return len(due)
