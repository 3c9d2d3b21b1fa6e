"""Serving a kept copy: which video, in what state, and which bytes of it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.archive import repository
from service.archive.copier import error_class
from service.catalog.statuses import TERMINAL_STATUSES
from service.platform.errors import (
    ArchiveExpired,
    ArchiveGone,
    InvalidRequest,
    NotArchived,
    NotFound,
    RangeNotSatisfiable,
)
from service.teams.service import Caller

RETRY_AFTER_SECONDS = "5"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


async def stored_video(
    conn: asyncpg.Connection, *, caller: Caller, task_id: str, index: int
) -> asyncpg.Record:
    """The caller's stored copy of the task's video `index`, or the error that says why
    there is none (another team's task is not found)."""
    status = await repository.task_status(conn, task_id=task_id, team_id=caller.team_id)
    if status is None:
        raise NotFound(f"task {task_id} not found")
    row = await repository.for_task(conn, task_id=task_id, team_id=caller.team_id, index=index)
    if row is None:
        if status not in TERMINAL_STATUSES:
            raise NotArchived(
                f"task {task_id} has not finished; its video is archived once it completes",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        raise NotArchived(f"task {task_id} has no archived video {index}")
    if row["state"] == "pending":
        raise NotArchived(
            f"video {index} of task {task_id} is being archived",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if row["state"] == "failed":
        raise ArchiveGone(
            # The class only: the worker's error text can name addresses and the store.
            f"video {index} of task {task_id} could not be archived "
            f"({error_class(row['last_error'])})"
        )
    if row["state"] == "expired":
        raise ArchiveExpired(
            f"video {index} of task {task_id} was deleted by the retention policy "
            "(QGW_ARCHIVE_RETENTION_DAYS)"
        )
    return row


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=` range of RFC 9110 (first-last, first-, -suffix); None for the whole.
    Several ranges are answered whole (allowed by the RFC)."""
    if header is None or "," in header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        raise InvalidRequest("Range: expected bytes=first-last, bytes=first- or bytes=-n")
    first, last = match.groups()
    if first == "":
        count = int(last)
        if count == 0:
            raise RangeNotSatisfiable("Range: an empty suffix", headers=_unsatisfied(size))
        return ByteRange(max(0, size - count), size)
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(
            f"Range: starts past the end ({size} bytes)", headers=_unsatisfied(size)
        )
    return ByteRange(start, end)


def _unsatisfied(size: int) -> dict[str, str]:
    return {"Content-Range": f"bytes */{size}"}


def etag_of(row: Any) -> str:
    return f'"{row["sha256"]}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags
