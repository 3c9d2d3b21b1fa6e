"""Announcing a task's changes to its app: the webhook event, rendered as the task is now,
written to the webhooks outbox in the same transaction as the change it announces."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.tasks import repository as tasks
from service.tasks.render import DEFAULT_VERSION, render_task
from service.tasks.states import TaskStatus
from service.webhooks import repository
from service.webhooks.ids import new_event_id


async def task_event(
    conn: asyncpg.Connection, task: Any, event: str, *, version: str | None = None
) -> str | None:
    """Queue `event` for the task's callback_url if it subscribed to it; the event id.

    The body is the task exactly as GET /v1/tasks/{id} shows it now, plus "event", in the
    team's answer version (`version`, else the row's `team_api_version`), as Stripe renders
    events in the account's version. Its `urls` are paths on the gateway.
    """
    if not task["callback_url"] or event not in task["callback_events"]:
        return None
    event_id = new_event_id()
    await repository.insert_event(
        conn,
        event_id=event_id,
        team_id=task["team_id"],
        task_id=task["id"],
        event=event,
        url=task["callback_url"],
        payload={
            **render_task(task, version=version or task.get("team_api_version") or DEFAULT_VERSION),
            "event": event,
        },
    )
    return event_id


async def progress_event(
    conn: asyncpg.Connection, task_id: str, *, interval_seconds: float
) -> str | None:
    """A 'processing' event, at most one per task per interval (terminal ones always go)."""
    task = await repository.mark_progress_event(conn, task_id, interval_seconds=interval_seconds)
    return await task_event(conn, task, TaskStatus.PROCESSING) if task is not None else None


async def archived_event(conn: asyncpg.Connection, task_id: str, version: str) -> None:
    """`archived`: every video of the task is kept (archive.copier.Archiver's on_archived)."""
    task = await tasks.get_task(conn, task_id)
    if task is not None:
        await task_event(conn, task, "archived", version=version)
