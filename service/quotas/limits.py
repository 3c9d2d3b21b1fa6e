"""The limits one submission is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Limits:
    """Per key and per team requests-per-minute (None: no limit)."""

    key_id: UUID
    team_id: UUID
    key_rpm: int | None
    team_rpm: int | None
