"""Spend reports: what finished tasks cost, grouped as finance asks, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from service.catalog.engine import Catalog, shipped_catalog
from service.catalog.refresh import model_families
from service.catalog.rules import METADATA_KEY
from service.platform.errors import InvalidRequest
from service.platform.money import format_usd
from service.spend import repository

TEAM_DIMENSIONS = ("day", "week", "month", "model", "family", "resolution", "key", "status")
MAX_GROUPS = 4
MAX_RANGE_DAYS = 400


@dataclass(frozen=True)
class ReportQuery:
    since: datetime
    until: datetime
    group_by: list[str]
    up_to_now: bool = False  # `to` was not given: everything admitted so far


def parse_query(
    *,
    from_: str | None,
    to: str | None,
    group_by: list[str],
    timezone: str,
    now: datetime,
    admin: bool,
) -> ReportQuery:
    """Dates are days in the budget time zone (`to` exclusive), or ISO 8601 times; the
    default is the current month. Group names are checked here and nowhere else."""
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    since = _instant(from_, zone, "from") if from_ else _month_start(local_now)
    until = _instant(to, zone, "to") if to else now
    if until <= since:
        raise InvalidRequest("to: must be after from", param="to")
    if until - since > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidRequest(f"to: at most {MAX_RANGE_DAYS} days after from", param="to")
    allowed = TEAM_DIMENSIONS + (("team",) if admin else ())
    if len(group_by) > MAX_GROUPS:
        raise InvalidRequest(f"group_by: at most {MAX_GROUPS}", param="group_by")
    for name in group_by:
        key = name.removeprefix("metadata.")
        if name.startswith("metadata.") and METADATA_KEY.match(key):
            continue
        if name not in allowed:
            raise InvalidRequest(
                f"group_by: {name!r} is not one of {', '.join(allowed)} or metadata.<key>",
                param="group_by",
            )
    if len(set(group_by)) != len(group_by):
        raise InvalidRequest("group_by: each dimension once", param="group_by")
    return ReportQuery(since=since, until=until, group_by=group_by, up_to_now=not to)


def _instant(text: str, zone: ZoneInfo, param: str) -> datetime:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=zone)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{param}: a date (2026-11-01) or an ISO 8601 time", param=param
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=zone)


def _month_start(local_now: datetime) -> datetime:
    return local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def spend_report(
    conn: asyncpg.Connection,
    *,
    from_: str | None,
    to: str | None,
    group_by: list[str],
    timezone: str,
    now: datetime,
    team_id: UUID | None,
    admin: bool,
    catalog: Catalog | None = None,
) -> dict[str, Any]:
    """The report a team (its own) or an admin (`admin`: any team, or all) asked for;
    `catalog` (the one in force; default the shipped one) names each model's family."""
    query = parse_query(
        from_=from_, to=to, group_by=group_by, timezone=timezone, now=now, admin=admin
    )
    families = model_families(catalog or shipped_catalog()) if "family" in group_by else None
    return await build_report(
        conn, query=query, timezone=timezone, team_id=team_id, families=families
    )


async def build_report(
    conn: asyncpg.Connection,
    *,
    query: ReportQuery,
    timezone: str,
    team_id: UUID | None,
    families: dict[str, str] | None = None,
) -> dict[str, Any]:
    keys = [g.removeprefix("metadata.") for g in query.group_by if g.startswith("metadata.")]
    rows = await repository.report(
        conn,
        dimensions=query.group_by,
        metadata_keys=keys,
        since=query.since,
        until=None if query.up_to_now else query.until,
        timezone=timezone,
        team_id=team_id,
        rolled_up_days=await _rolled_up_days(conn, query, keys, ZoneInfo(timezone)),
        families=families,
    )
    disputed = await repository.open_disputed(
        conn, since=query.since, until=None if query.up_to_now else query.until, team_id=team_id
    )
    out = []
    for row in rows:
        item: dict[str, Any] = {name: row[f"g{i}"] for i, name in enumerate(query.group_by)}
        item.update(
            tasks=row["tasks"],
            completed=row["completed"],
            spent_usd=format_usd(row["spent_micros"]),
        )
        out.append(item)
    return {
        "from": query.since.isoformat(),
        "to": query.until.isoformat(),
        "timezone": timezone,
        "group_by": query.group_by,
        "rows": out,
        "total": {
            "tasks": sum(r["tasks"] for r in rows),
            "completed": sum(r["completed"] for r in rows),
            "spent_usd": format_usd(sum(r["spent_micros"] for r in rows)),
            "disputed_usd": format_usd(disputed),
        },
    }


async def _rolled_up_days(
    conn: asyncpg.Connection, query: ReportQuery, keys: list[str], zone: ZoneInfo
) -> tuple[date, date | None] | None:
    """The report's window as whole days of the roll-up, or None where it must read the
    charges: a metadata grouping, a bound within a day, a roll-up in another zone."""

    def day(instant: datetime) -> date | None:
        local = instant.astimezone(zone)
        return local.date() if local.time() == time() else None

    first = day(query.since)
    end = None if query.up_to_now else day(query.until)
    if keys or first is None or (end is None and not query.up_to_now):
        return None
    if await repository.zone(conn) != zone.key:
        return None
    return first, end


def report_csv(report: dict[str, Any]) -> str:
    """The report's rows with a header row (the grouping columns, then the figures)."""
    buffer = io.StringIO()
    columns = [*report["group_by"], "tasks", "completed", "spent_usd"]
    # RFC 4180's CRLF: the writer quotes a cell holding either character (with "\n" alone
    # it left a CR bare, and readers split the row there).
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({name: _cell(row[name]) for name in columns})
    return buffer.getvalue()


# A spreadsheet runs a cell starting with one of these as a formula (a TAB or CR before
# one too): metadata and names are app input (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def usage_windows(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [
        {
            "window": row["period"],
            "starts_at": row["starts_at"],
            "resets_at": row["resets_at"],
            "spent_usd": format_usd(row["spent_micros"]),
            "reserved_usd": format_usd(row["reserved_micros"]),
            "tasks": row["finished"] + row["live"],
        }
        for row in rows
    ]
