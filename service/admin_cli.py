"""`qingbo-gateway admin ...`: operator commands that talk to Postgres directly."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from service.archive import repository as archives
from service.audit import repository as audit_repository
from service.audit.service import AuditContext
from service.budgets.service import LedgerReport, verify_ledger
from service.config import Settings
from service.db import create_pool
from service.errors import ServiceError
from service.teams import service as teams
from service.teams.schemas import KeyCreate, TeamCreate

# Changes made from a shell are audited as the operating-system user who ran them.
CLI = AuditContext(actor=f"cli:{getpass.getuser()}", source="cli")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one admin command; the exit status (verify-ledger: 1 when the ledger disagrees)."""
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            if args.admin_command == "verify-ledger":
                return print_ledger_report(await verify_ledger(conn))
            if args.admin_command == "create-team":
                async with conn.transaction():
                    team = await teams.create_team(conn, body=TeamCreate(name=args.name), audit=CLI)
                    key_row, key = await teams.issue_key(
                        conn, team_id=team["id"], body=KeyCreate(name=args.key_name), audit=CLI
                    )
                print(
                    json.dumps(
                        {"team_id": str(team["id"]), "key_id": str(key_row["id"]), "key": key}
                    )
                )
            if args.admin_command == "archive":
                since = datetime.fromisoformat(args.since)
                if since.tzinfo is None:
                    since = since.replace(tzinfo=UTC)
                async with conn.transaction():
                    queued = await archives.backfill(conn, since=since)
                print(json.dumps({"queued_videos": queued, "since": since.isoformat()}))
                return 0
            if args.admin_command == "keys":
                return await _keys(conn, args)
            if args.admin_command == "audit":
                rows = await audit_repository.list_entries(
                    conn,
                    target=args.target,
                    action=args.action,
                    since=None,
                    before_id=None,
                    limit=args.limit,
                )
                for row in rows:
                    print(json.dumps(dict(row), default=str, ensure_ascii=False))
    finally:
        await pool.close()
    return 0


async def _keys(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    """`admin keys list|issue|revoke`: one JSON object a line; changes are audited."""
    try:
        if args.keys_command == "list":
            for row in await teams.list_keys(conn, team_id=UUID(args.team)):
                print(json.dumps(dict(row), default=str))
        elif args.keys_command == "issue":
            body = KeyCreate(name=args.name, expires_in_days=args.expires_in_days)
            row, key = await teams.issue_key(conn, team_id=UUID(args.team), body=body, audit=CLI)
            print(json.dumps({**dict(row), "key": key}, default=str))
        else:
            await teams.revoke_key(conn, key_id=UUID(args.key_id), audit=CLI)
            print(json.dumps({"id": args.key_id, "revoked": True}))
    except ValueError as exc:  # a malformed id, or a rule the key breaks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def print_ledger_report(report: LedgerReport) -> int:
    for row in report.period_mismatches:
        print(
            f"MISMATCH budget {row['budget_id']} window {row['starts_at']} "
            f"shard {row['shard']}: "
            f"spent {row['spent_micros']} vs ledger {row['ledger_spent']}, "
            f"reserved {row['reserved_micros']} vs ledger {row['ledger_reserved']} (micro-USD)"
        )
    for row in report.overdrawn_shards:
        print(
            f"OVERDRAWN budget {row['budget_id']} window {row['starts_at']} "
            f"shard {row['shard']}: spent {row['spent_micros']} + reserved "
            f"{row['reserved_micros']} > allowance {row['allowance_micros']} (micro-USD)"
        )
    for row in report.task_mismatches:
        print(
            f"MISMATCH task {row['id']} ({row['status']}, costs {row['cost_micros']}) in budget "
            f"{row['budget_id']}: reserved {row['reserved']}, settled {row['settled']}, "
            f"outstanding {row['outstanding']}"
        )
    for row in report.orphan_entries:
        missing = " and ".join(
            what for what, gone in (("shard", row["no_shard"]), ("task", row["no_task"])) if gone
        )
        print(
            f"ORPHAN ledger entry {row['id']} ({row['kind']} {row['amount_micros']} micro-USD, "
            f"task {row['task_id']}, budget {row['budget_id']} window {row['starts_at']} "
            f"shard {row['shard']}): no such {missing}"
        )
    for row in report.charge_mismatches:
        print(
            f"CHARGE task {row['task_id']} ({row['status']}, charged {row['charged_micros']}): "
            f"charge row {row['amount_micros']} micro-USD ({row['charge_status']})"
        )
    verdict = "OK" if report.ok else "FAILED"
    print(
        f"{verdict}: {report.periods_checked} budget windows checked against the ledger; "
        f"{len(report.period_mismatches)} shard and {len(report.task_mismatches)} task "
        f"mismatches, {len(report.overdrawn_shards)} overdrawn shards, "
        f"{len(report.orphan_entries)} orphan entries, "
        f"{len(report.charge_mismatches)} charge mismatches"
    )
    return 0 if report.ok else 1
