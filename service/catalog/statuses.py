"""A task's status: Qingbo's vocabulary, which callers see unchanged."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """A task's status as Qingbo names it, and as callers see it (tasks/states.py)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(TaskStatus)
TERMINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
