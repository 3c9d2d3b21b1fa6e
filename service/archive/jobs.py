"""arq entry points of the archive."""

from __future__ import annotations

from typing import Any

from service.archive import repository as archives
from service.archive.copier import apply_retention
from service.archive.queue import enqueue_archive


async def archive_video(ctx: dict[str, Any], task_id: str, index: int) -> str:
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
    if res.archive is None:
        return "off"
    outcome: str = await res.archive.archive(res.pool, task_id, index)
    return outcome


async def sweep_archive(ctx: dict[str, Any]) -> int:
    """Enqueue every video due for archiving that no worker holds (new ones, retries, and
    those whose worker died mid-copy: their lease ran out)."""
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
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
    res = ctx["resources"]  # the worker's (tasks.resources.Resources)
    days = res.settings.archive_retention_days
    if res.archive is None or days is None:
        return 0
    return await apply_retention(res.pool, res.archive.store, days=days)
