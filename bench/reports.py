"""Benchmark spend reports over a year of a busy company: a million finished tasks across
100 teams, 3 models, 20 projects (metadata), with the status mix of a real day.

Each report is timed through the gateway's own report code (service/spend) on a database
the benchmark fills itself (generate_series, one statement). The floor is the cheapest
query touching the same rows: counting the charges in the report's range, in the same run.
Goal: every report well under a second (PASS under 500 ms at the median of the runs).

    .venv/bin/python bench/reports.py [--tasks 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database, drop_database, timed  # noqa: E402
from service.platform.db import create_pool, migrate  # noqa: E402
from service.spend.service import build_report, parse_query  # noqa: E402

GOAL_MS = 500.0
KEEP = bool(os.environ.get("QGW_BENCH_KEEP"))  # keep the filled database, to look inside
TIMEZONE = "UTC"

FILL = """
INSERT INTO teams (name, webhook_secret)
SELECT 'bench-team-' || g, 'whsec_bench' FROM generate_series(1, 100) g;

INSERT INTO task_charges (task_id, team_id, api_key_id, model, resolution, status, metadata,
                          amount_micros, admitted_at, settled_at)
SELECT 'task-bench-' || g,
       t.ids[1 + g % 100],
       NULL,
       (ARRAY['minimax-hailuo-2.3', 'minimax-hailuo-2.3-fast', 'minimax-hailuo-02'])[1 + g % 3],
       (ARRAY['768p', '1080p'])[1 + g % 2],
       CASE WHEN g % 20 < 17 THEN 'completed' WHEN g % 20 < 19 THEN 'failed' ELSE 'cancelled' END,
       jsonb_build_object('project', 'project-' || ((g / 7) % 20), 'feature', 'f' || (g % 7)),
       CASE WHEN g % 20 < 17 THEN 158100 + (g % 4) * 153000 ELSE 0 END,
       $1::timestamptz - make_interval(secs => (g::float8 / $2) * 365 * 86400),
       $1::timestamptz - make_interval(secs => (g::float8 / $2) * 365 * 86400) + interval '1 min'
FROM generate_series(1, $2) g,
     (SELECT array_agg(id ORDER BY name) AS ids FROM teams WHERE name LIKE 'bench-team-%') t;
ANALYZE task_charges;
"""


async def fill(conn: asyncpg.Connection, tasks: int, now: datetime) -> float:
    started = time.perf_counter()
    statements = [s for s in FILL.split(";\n") if s.strip()]
    await conn.execute(statements[0])
    await conn.execute(statements[1], now, tasks)
    await conn.execute(statements[2])
    return time.perf_counter() - started


async def measure(base: str, url: str, tasks: int, runs: int) -> int:
    pool = await create_pool(url, min_size=1, max_size=2)
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        seconds = await fill(conn, tasks, now)
        team = await conn.fetchval("SELECT id FROM teams WHERE name = 'bench-team-1'")
        rows = await conn.fetchval("SELECT count(*) FROM task_charges")
    print(f"filled {rows:,} finished tasks over 365 days, 100 teams, in {seconds:.1f} s")
    month_ago = (now - timedelta(days=30)).date().isoformat()
    year_ago = (now - timedelta(days=364)).date().isoformat()
    reports = [
        ("team: 30 days by day, model", team, month_ago, ["day", "model"], False),
        ("team: 30 days by metadata.project", team, month_ago, ["metadata.project"], False),
        ("team: a year by month, status", team, year_ago, ["month", "status"], False),
        ("all teams: 30 days by team, model", None, month_ago, ["team", "model"], True),
        ("all teams: a year by month", None, year_ago, ["month"], True),
        (
            "all teams: a year by month, metadata.project",
            None,
            year_ago,
            ["month", "metadata.project"],
            True,
        ),
    ]
    print(f"\n| report | groups | floor ms | report ms | x floor | goal < {GOAL_MS:.0f} ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    missed = 0
    async with pool.acquire() as conn:
        for name, team_id, since, group_by, admin in reports:
            query = parse_query(
                from_=since, to=None, group_by=group_by, timezone=TIMEZONE, now=now, admin=admin
            )

            async def report(query: Any = query, team_id: Any = team_id) -> Any:
                return await build_report(conn, query=query, timezone=TIMEZONE, team_id=team_id)

            async def floor(query: Any = query, team_id: Any = team_id) -> Any:
                if team_id is None:
                    return await conn.fetchval(
                        "SELECT count(*) FROM task_charges "
                        "WHERE admitted_at >= $1 AND admitted_at < $2",
                        query.since,
                        query.until,
                    )
                return await conn.fetchval(
                    "SELECT count(*) FROM task_charges "
                    "WHERE team_id = $3 AND admitted_at >= $1 AND admitted_at < $2",
                    query.since,
                    query.until,
                    team_id,
                )

            floor_ms = await timed(runs, floor)
            report_ms = await timed(runs, report)
            groups = len((await report())["rows"])
            verdict = "PASS" if report_ms < GOAL_MS else "MISS"
            missed += verdict == "MISS"
            print(
                f"| {name} | {groups} | {floor_ms:.1f} | {report_ms:.1f} | "
                f"{report_ms / max(floor_ms, 0.001):.1f}x | {verdict} |"
            )
    await pool.close()
    if KEEP:
        print(f"kept {url}")
        return 1 if missed else 0
    await drop_database(base, url)
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base, url = database()
    migrate(url)
    sys.exit(asyncio.run(measure(base, url, args.tasks, args.runs)))
