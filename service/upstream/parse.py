"""Reading Qingbo's task answers in every shape it has used (qingbo-api.md, "Three shapes
seen over time"): progress as an integer or a percentage string, video urls as a string or
a list, timestamps in seconds or milliseconds, and the quota billing fields. One reader for
every generation: the vendor's own pages mix the shapes (service/catalog/wire.py describes
what each generation sends), so nothing here asks which one is configured."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.catalog.statuses import STATUSES
from service.catalog.wire import QUOTA_BILLING
from service.platform.metrics import UPSTREAM_ODD_ANSWERS
from service.upstream.sanitize import MAX_MESSAGE_CHARS, clean_answer, clean_text

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
# A number, matched on a string already cut to _MAX_PROGRESS_CHARS: no two quantifiers can
# share a character, so matching is linear (the old `\s*%?\s*$` backtracked quadratically:
# 20 kB of spaces blocked the worker's loop for seconds).
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_MAX_PROGRESS_CHARS = 32
# More than any task costs (2e9 USD, in quota at 500,000 a dollar): a larger `cost` is held
# here, named as an oddity, and becomes a dispute (budgets/disputes.py), not an overflow.
MAX_COST_QUOTA = 10**15
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
    # Billing in quota (500,000 = 1 USD; QUOTA_BILLING names the fields); None where
    # Qingbo did not say.
    pre_consumed_quota: int | None = None
    cost_quota: int | None = None
    billing_status: str | None = None
    # What was strange in the answer (an unknown status, a progress or a timestamp that
    # cannot be right): logged and counted by the caller, never a reason to resend.
    oddities: tuple[str, ...] = ()


def _progress_number(text: str) -> float | None:
    """`"45%"`, `" 45.5 % "` or `"45"` as a number; None for anything else or too long."""
    if len(text) > _MAX_PROGRESS_CHARS:
        return None
    digits = text.strip().removesuffix("%").rstrip()
    return float(digits) if _NUMBER.fullmatch(digits) else None


def parse_progress(value: Any) -> int:
    """0-100 from an integer, a float, `"45%"`, `"45"` or `""`; anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str):
        value = _progress_number(value) or 0
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
        or (isinstance(progress, str) and _progress_number(progress) is None)
        or (isinstance(progress, float) and not math.isfinite(progress))
        or not isinstance(progress, int | float | str)
    ):
        found.append("bad_progress")
    for name in ("created_at", "start_time", "completed_at"):
        if answer.get(name) is not None and parse_time(answer[name]) is None:
            found.append("bad_time")
            break
    cost = answer.get(QUOTA_BILLING.charged)
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > MAX_COST_QUOTA:
        found.append("absurd_cost")
    return tuple(found)


def parse_quota(value: Any) -> int | None:
    """A whole, non-negative quota amount, held at MAX_COST_QUOTA; else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if value < 0 or value != int(value):
        return None
    return min(int(value), MAX_COST_QUOTA)


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
        url_list = [u for u in urls if isinstance(u, str) and u] if isinstance(urls, list) else []
        expires = parse_time(item.get("expires_at"))
        videos.append(
            {"url": url_list, "expires_at": int(expires.timestamp()) if expires else None}
        )
    images = result.get("images")
    listed = images if isinstance(images, list) else []
    kept = [i for i in listed if i and isinstance(i, str | dict)]
    return {"images": kept, "videos": videos}


def normalize_error(error: Any) -> dict[str, Any] | None:
    """Qingbo's error as {message, code}, whatever shape it came in (strings, cut)."""
    if error is None:
        return None
    if not isinstance(error, dict):
        message: Any = clean_text(str(error), limit=MAX_MESSAGE_CHARS)
        return {"message": message, "code": "upstream_error"}
    message, code = error.get("message"), error.get("code")
    return {
        "message": clean_text(str(message if message is not None else ""), limit=MAX_MESSAGE_CHARS),
        "code": clean_text(str(code), limit=64) if code is not None else "upstream_error",
    }


def parse_status(value: Any) -> str:
    """One of STATUSES (its aliases too), else UNKNOWN_STATUS."""
    raw = str(value if value is not None else "")[:32].lower()
    status = _STATUS_ALIASES.get(raw, raw)
    return status if status in STATUSES else UNKNOWN_STATUS


def parse_upstream_task(answer: dict[str, Any]) -> UpstreamView:
    """Never raises, and takes time linear in the answer's size: the answer is cleaned
    first (sanitize.py: no NUL or control characters, sizes and counts capped), a status it
    does not know is UNKNOWN_STATUS, and each oddity is named in `oddities` for the caller
    to log and count."""
    raw = answer
    answer = clean_answer(raw)
    status = parse_status(answer.get("status"))
    error = normalize_error(answer.get("error"))
    billing = answer.get(QUOTA_BILLING.state)
    return UpstreamView(
        status=status,
        progress=parse_progress(answer.get("progress")),
        result=normalize_result(answer.get("result")),
        error=error,
        start_time=parse_time(answer.get("start_time")),
        completed_at=parse_time(answer.get("completed_at")),
        pre_consumed_quota=parse_quota(answer.get(QUOTA_BILLING.reserved)),
        cost_quota=parse_quota(answer.get(QUOTA_BILLING.charged)),
        billing_status=billing[:32] if isinstance(billing, str) else None,
        oddities=_oddities(raw, status),
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
