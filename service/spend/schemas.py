"""Spend report bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SpendTotal(BaseModel):
    tasks: int
    completed: int
    spent_usd: str
    disputed_usd: str = Field(
        description="Reported by Qingbo beyond the charge cap for these tasks, in open "
        "disputes: not in spent_usd until an admin accepts them"
    )


class SpendReport(BaseModel):
    from_: str = Field(alias="from")
    to: str
    timezone: str
    group_by: list[str]
    rows: list[dict[str, Any]] = Field(
        description="One per group: the grouping values by name, then tasks, completed, spent_usd"
    )
    total: SpendTotal
