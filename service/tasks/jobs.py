"""arq entry points: thin wrappers that hand the worker's resources to execution.py and
submission.py."""

from __future__ import annotations

import uuid
from typing import Any

from service.archive import repository as archives
from service.archive.copier import apply_retention
from service.deps import Resources
from service.tasks import execution, submission
from service.tasks.queue import enqueue_archive, enqueue_delivery
from service.webhooks import repository as webhooks


def _res(ctx: dict[str, Any]) -> Resources:
    res: Resources = ctx["resources"]
    return res


async def dispatch_pending_tasks(ctx: dict[str, Any]) -> int:
    return await execution.dispatch_pending(_res(ctx))


async def submit_task(ctx: dict[str, Any], task_id: str, attempt: int) -> str:
    return await submission.submit(_res(ctx), task_id, attempt)


async def refresh_task(ctx: dict[str, Any], task_id: str) -> str:
    res = _res(ctx)
    return await execution.refresh_from_upstream(res.pool, res.qingbo, res.settings, task_id)


async def poll_due_tasks(ctx: dict[str, Any]) -> int:
    return await execution.enqueue_due_polls(_res(ctx))


async def reconcile_tasks(ctx: dict[str, Any]) -> dict[str, int]:
    return await execution.reconcile(_res(ctx))


async def deliver_webhook(ctx: dict[str, Any], event_id: str) -> str:
    res = _res(ctx)
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
    res = _res(ctx)
    async with res.pool.acquire() as conn:
        due = await webhooks.due(conn, limit=1000)
    for row in due:
        await enqueue_delivery(res.redis, res.settings.arq_queue_name, row["id"], row["attempts"])
    return len(due)


async def archive_video(ctx: dict[str, Any], task_id: str, index: int) -> str:
    res = _res(ctx)
    if res.archive is None:
        return "off"
    return await res.archive.archive(res.pool, task_id, index)


async def sweep_archive(ctx: dict[str, Any]) -> int:
    """Enqueue every video due for archiving that no worker holds (new ones, retries, and
    those whose worker died mid-copy: their lease ran out)."""
    res = _res(ctx)
    if res.archive is None:
        return 0
    async with res.pool.acquire() as conn:
        due = await archives.due(conn, limit=500)
    for row in due:
        await enqueue_archive(
            res.redis, res.settings.arq_queue_name, row["task_id"], row["idx"], row["attempts"]
        )
    return len(due)


async def archive_retention(ctx: dict[str, Any]) -> int:
    res = _res(ctx)
    days = res.settings.archive_retention_days
    if res.archive is None or days is None:
        return 0
    return await apply_retention(res.pool, res.archive.store, days=days)
