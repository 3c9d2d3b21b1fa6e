"""The operators' view at a glance (the console's operations page): tasks in flight
against the cap, who is waiting, whether submissions are paused and why, the archive's and
the webhooks' backlogs, budget alerts and charge disputes; and any team's task."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from service.archive import repository as archives
from service.budgets.alerts import ALERT_EVENT
from service.budgets.service import all_budgets
from service.config import Settings
from service.platform.errors import NotFound
from service.tasks import repository
from service.webhooks import repository as webhooks


async def operations_overview(
    conn: asyncpg.Connection, *, settings: Settings, now: datetime
) -> dict[str, Any]:
    stages = await repository.count_by_stage(conn)
    pause = await repository.upstream_pause(conn)
    budgets = await all_budgets(conn, now=now, timezone=settings.budget_timezone)
    levels = settings.alert_percents
    return {
        "in_flight": sum(n for stage, n in stages.items() if stage != "pending"),
        "max_in_flight": settings.upstream_max_in_flight,
        "stages": stages,
        "by_team": [dict(r) for r in await repository.waiting_by_team(conn)],
        "paused_until": pause["paused_until"] if pause else None,
        "pause_reason": pause["pause_reason"] if pause else None,
        "archive_waiting": await archives.waiting_by_expiry(conn),
        "webhook_backlog": await webhooks.backlog(conn),
        "alerts_sent_24h": await repository.event_counts(
            conn, event=ALERT_EVENT, since=now - timedelta(hours=24)
        ),
        # Budgets whose current window stands at or over each alert level.
        "budgets_at_level": {
            level: sum(1 for b in budgets if b["used_percent"] >= level) for level in levels
        },
        "disputes": await repository.dispute_count(conn),
    }


async def find_task(conn: asyncpg.Connection, *, task_id: str) -> asyncpg.Record:
    """Any team's task (operators: the console's admin view), or not found."""
    row = await repository.get_task(conn, task_id)
    if row is None:
        raise NotFound(f"task {task_id} not found")
    return row
