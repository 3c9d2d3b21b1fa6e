"""Reading Qingbo's task answers in every shape it has used (qingbo-api.md, "Three shapes
seen over time"): progress as an integer or a percentage string, video urls as a string or
a list, timestamps in seconds or milliseconds, and the 2026-09 billing fields."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.catalog.models import STATUSES
from service.metrics import UPSTREAM_ODD_ANSWERS

logger = logging.getLogger(__name__)

# Qingbo documents five statuses; map the spellings other vendors use, defensively.
_STATUS_ALIASES = {
    "pending": "queued",
    "submitted": "queued",
    "running": "processing",
    "in_progress": "processing",
    "succeeded": "completed",
    "success": "completed",
    "error": "failed",
    "canceled": "cancelled",
}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")
# Later than this as seconds means milliseconds (year 5138 in seconds; 1973 in ms).
_MS_THRESHOLD = 100_000_000_000
# Timestamps outside these bounds are absurd (Qingbo did not exist before; a clock a year
# ahead is broken): they are dropped rather than shown or used in durations.
_EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
_MAX_AHEAD_SECONDS = 366 * 24 * 3600
UNKNOWN_STATUS = "unknown"


@dataclass(frozen=True)
class UpstreamView:
    status: str
    progress: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    start_time: datetime | None
    completed_at: datetime | None
    # 2026-09 billing, in quota (500,000 = 1 USD); None where Qingbo did not say.
    pre_consumed_quota: int | None = None
    cost_quota: int | None = None
    billing_status: str | None = None
    # What was strange in the answer (an unknown status, a progress or a timestamp that
    # cannot be right): logged and counted by the caller, never a reason to resend.
    oddities: tuple[str, ...] = ()


def parse_progress(value: Any) -> int:
    """0-100 from an integer, a float, `"45%"`, `"45"` or `""`; anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str):
        match = _PERCENT.match(value)
        value = float(match.group(1)) if match else 0
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return min(100, max(0, int(value)))


def parse_time(value: Any) -> datetime | None:
    """Unix seconds or milliseconds (Qingbo's pages show both); None when absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    if not math.isfinite(value):
        return None
    seconds = value / 1000 if value > _MS_THRESHOLD else value
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    if moment < _EARLIEST or seconds > datetime.now(UTC).timestamp() + _MAX_AHEAD_SECONDS:
        return None
    return moment


def _oddities(answer: dict[str, Any], status: str) -> tuple[str, ...]:
    found = []
    if status == UNKNOWN_STATUS:
        found.append("unknown_status")
    progress = answer.get("progress")
    if progress not in (None, "") and (
        isinstance(progress, bool)
        or (isinstance(progress, str) and not _PERCENT.match(progress))
        or (isinstance(progress, float) and not math.isfinite(progress))
        or not isinstance(progress, int | float | str)
    ):
        found.append("bad_progress")
    for name in ("created_at", "start_time", "completed_at"):
        if answer.get(name) is not None and parse_time(answer[name]) is None:
            found.append("bad_time")
            break
    return tuple(found)


def parse_quota(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value) if value >= 0 and value == int(value) else None


def normalize_result(result: Any) -> dict[str, Any] | None:
    """The result with each video's `url` as a list and `expires_at` in seconds."""
    if not isinstance(result, dict):
        return None
    videos = []
    for item in result.get("videos") or []:
        if not isinstance(item, dict):
            continue
        urls = item.get("url")
        if isinstance(urls, str):
            urls = [urls]
        url_list = [u for u in urls or [] if isinstance(u, str)]
        expires = parse_time(item.get("expires_at"))
        videos.append(
            {"url": url_list, "expires_at": int(expires.timestamp()) if expires else None}
        )
    images = result.get("images")
    return {"images": images if isinstance(images, list) else [], "videos": videos}


def parse_status(value: Any) -> str:
    """One of STATUSES (its aliases too), else UNKNOWN_STATUS."""
    raw = str(value if value is not None else "").lower()
    status = _STATUS_ALIASES.get(raw, raw)
    return status if status in STATUSES else UNKNOWN_STATUS


def parse_upstream_task(answer: dict[str, Any]) -> UpstreamView:
    """Never raises: a status it does not know is UNKNOWN_STATUS, and each oddity is named
    in `oddities` for the caller to log and count."""
    status = parse_status(answer.get("status"))
    error = answer.get("error")
    if error is not None and not isinstance(error, dict):
        error = {"message": str(error), "code": "upstream_error"}
    billing = answer.get("billing_status")
    return UpstreamView(
        status=status,
        progress=parse_progress(answer.get("progress")),
        result=normalize_result(answer.get("result")),
        error=error,
        start_time=parse_time(answer.get("start_time")),
        completed_at=parse_time(answer.get("completed_at")),
        pre_consumed_quota=parse_quota(answer.get("pre_consumed_cost")),
        cost_quota=parse_quota(answer.get("cost")),
        billing_status=billing if isinstance(billing, str) else None,
        oddities=_oddities(answer, status),
    )


def report_oddities(view: UpstreamView, *, operation: str, task_id: str) -> None:
    """Log and count what was strange in one of Qingbo's answers."""
    for oddity in view.oddities:
        UPSTREAM_ODD_ANSWERS.labels(operation, oddity).inc()
    if view.oddities:
        logger.warning(
            "Qingbo answered something strange",
            extra={"task_id": task_id, "operation": operation, "oddities": list(view.oddities)},
        )
