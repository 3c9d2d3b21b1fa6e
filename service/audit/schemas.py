"""Audit trail bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEntry(BaseModel):
    id: int
    at: datetime
    action: str = Field(description="team.create, team.update, key.issue, key.revoke, ...")
    target_type: str = Field(description="team, key, company (budgets), ...")
    target_id: str | None
    before: Any = Field(description="The values before (secrets by their prefix at most)")
    after: Any
    request_id: str | None
    source: str | None = Field(description="The client address, or cli")
    actor: str = Field(description="X-Actor of the request, else admin")


class AuditList(BaseModel):
    data: list[AuditEntry]
    next_cursor: str | None
