"""Writing webhook events in the same transaction as the task change they announce."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from service.tasks.render import DEFAULT_VERSION, render_task
from service.webhooks import repository


def new_event_id() -> str:
    return "msg_" + uuid.uuid4().hex


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
    return await task_event(conn, task, "processing") if task is not None else None
