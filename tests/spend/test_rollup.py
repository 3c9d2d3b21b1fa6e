"""The daily roll-up reports read: the same figures before any charge is rolled up, after
all are and with some still to fold; a new budget time zone starts it over; verify-ledger
names a roll-up row that disagrees with its charges."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from service.budgets.service import verify_ledger
from service.spend import repository, rollup
from service.spend.service import spend_report
from tests.factories import make_team
from tests.spend.conftest import run_tasks

GROUPINGS = [
    [],
    ["team"],
    ["team", "model", "key", "status"],
    ["day", "resolution"],
    ["month", "team"],
    ["week"],
]


async def reports(db: asyncpg.Connection, timezone: str = "UTC") -> list[dict[str, Any]]:
    """Reports over whole days (the roll-up may answer) across the groupings."""
    now = datetime.now(UTC)
    out = []
    for group_by in GROUPINGS:
        for window in ({}, {"from_": "2026-01-01"}, {"from_": "2026-01-01", "to": "2027-01-01"}):
            answer = await spend_report(
                db,
                **{"from_": None, "to": None, **window},
                group_by=group_by,
                timezone=timezone,
                now=now,
                team_id=None,
                admin=True,
            )
            out.append({k: answer[k] for k in ("rows", "total")})
    return out


async def unfolded(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM task_charges WHERE NOT rolled_up"))


async def test_reports_agree_before_after_and_half_way_through_the_fold(
    client: httpx.AsyncClient, db: asyncpg.Connection, history: dict[str, Any]
) -> None:
    from_charges = await reports(db)
    assert from_charges[0]["total"]["tasks"] == 290  # this month's, of both teams
    assert await rollup.fold(db, timezone="UTC") == 320
    assert await unfolded(db) == 0
    assert await db.fetchval("SELECT count(*) FROM spend_daily") < 320
    assert await reports(db) == from_charges
    # More tasks finish after the fold: the report adds the charges not yet rolled up.
    await run_tasks(client, db, await make_team(client), 12, random.Random(7))
    half_way = await reports(db)
    assert await unfolded(db) == 12
    assert half_way[0]["total"]["tasks"] == 302
    assert await rollup.fold(db, timezone="UTC", batch=5) == 12  # in three transactions
    assert await reports(db) == half_way
    assert (await verify_ledger(db)).ok


async def test_a_new_time_zone_refolds_and_reports_read_charges_meanwhile(
    db: asyncpg.Connection, history: dict[str, Any]
) -> None:
    zone = "Asia/Shanghai"
    in_shanghai = await reports(db, zone)
    assert await rollup.fold(db, timezone="UTC") == 320
    assert await reports(db, zone) == in_shanghai  # a UTC roll-up is not read for Shanghai
    assert await rollup.fold(db, timezone=zone) == 320  # every charge again
    assert await repository.zone(db) == zone
    assert await reports(db, zone) == in_shanghai
    assert (await verify_ledger(db)).ok


async def test_verify_ledger_names_a_roll_up_row_that_disagrees(
    db: asyncpg.Connection, history: dict[str, Any]
) -> None:
    await rollup.fold(db, timezone="UTC")
    team_id = history["budgeted"].team["id"]
    before = await reports(db)
    changed = await db.execute(
        "UPDATE spend_daily SET amount_micros = amount_micros + 1 WHERE ctid = "
        "(SELECT ctid FROM spend_daily WHERE team_id = $1 LIMIT 1)",
        team_id,
    )
    assert changed == "UPDATE 1"
    assert await reports(db) != before  # reports read the roll-up
    report = await verify_ledger(db)
    assert not report.ok and [str(r["team_id"]) for r in report.rollup_mismatches] == [team_id]
