"""Budget alerts: the thresholds an admission crossed become the team's signed webhook
(in the admission's transaction), a metric and a log line (after it commits)."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import asyncpg

from service.platform.metrics import BUDGET_THRESHOLD_CROSSINGS
from service.platform.money import format_usd
from service.webhooks import repository as webhooks
from service.webhooks.ids import new_event_id

logger = logging.getLogger(__name__)

ALERT_EVENT = "budget.threshold"


async def write_alert_webhooks(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    team_name: str,
    task_id: str,
    crossings: list[dict[str, Any]],
) -> None:
    """One alert to the team's alert_url per crossing (none without an alert_url)."""
    for c in crossings:
        await webhooks.insert_team_alert(
            conn,
            event_id=new_event_id(),
            team_id=team_id,
            event=ALERT_EVENT,
            payload={
                "event": ALERT_EVENT,
                "team_id": str(team_id),
                "team": team_name,
                "scope": c["scope"],
                "window": c["window"],
                "percent": c["percent"],
                "limit_usd": format_usd(c["limit_micros"]),
                "spent_usd": format_usd(c["spent_micros"]),
                "reserved_usd": format_usd(c["reserved_micros"]),
                "resets_at": c["resets_at"],
                "task_id": task_id,
            },
        )


def count_crossings(team_name: str, crossings: list[dict[str, Any]]) -> None:
    """Metric and log event for each budget threshold an admission crossed."""
    for c in crossings:
        team_label = "" if c["scope"] == "company" else team_name
        BUDGET_THRESHOLD_CROSSINGS.labels(
            team_label, c["scope"], c["window"], str(c["percent"])
        ).inc()
        logger.warning(
            "budget threshold crossed",
            extra={
                "team": team_name,
                "scope": c["scope"],
                "window": c["window"],
                "percent": c["percent"],
                "limit_usd": format_usd(c["limit_micros"]),
                "committed_usd": format_usd(c["spent_micros"] + c["reserved_micros"]),
            },
        )
