"""Bars for the spend charts, drawn on the server as SVG (docs/decisions/001-console.md):
integer micro-dollars in, whole percents of the largest bar out."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from service.platform.money import format_usd, parse_usd


def bars(rows: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """One bar per report row: its label, its spend and its length (0-100)."""
    spent = [parse_usd(r["spent_usd"]) for r in rows]
    largest = max(spent, default=0)
    return [
        {
            "label": str(row[label]) if row[label] not in (None, "") else "(none)",
            "usd": format_usd(micros),
            "tasks": row["tasks"],
            "percent": micros * 100 // largest if largest else 0,
        }
        for row, micros in zip(rows, spent, strict=True)
    ]


def daily_bars(rows: list[dict[str, Any]], first: date, days: int) -> list[dict[str, Any]]:
    """A bar for every day from `first`, days without spend included (at zero)."""
    by_day = {r["day"]: r for r in rows}
    filled = [
        by_day.get(day, {"day": day, "tasks": 0, "spent_usd": "0.00"})
        for day in ((first + timedelta(days=i)).isoformat() for i in range(days))
    ]
    return bars(filled, "day")
