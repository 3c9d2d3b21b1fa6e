"""`qingbo-gateway admin ...`: operator commands that talk to Postgres directly.

Each prints JSON (one object a line) or, for verify-ledger, a report; errors are one line
on stderr. Changes are in the audit trail as the operating-system user who ran them.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import click

from service.archive import repository as archives
from service.audit.service import AuditContext, list_entries
from service.budgets.service import LedgerReport, verify_ledger
from service.config import get_settings
from service.platform.db import create_pool
from service.platform.egress import DestinationPolicy
from service.platform.errors import ServiceError
from service.platform.money import format_usd
from service.teams import service as teams
from service.teams.schemas import KeyCreate, TeamCreate

# Changes made from a shell are audited as the operating-system user who ran them.
CLI = AuditContext(actor=f"cli:{getpass.getuser()}", source="cli")


def run_with_connection(work: Callable[[asyncpg.Connection], Awaitable[int | None]]) -> None:
    """Run `work` on a connection of its own; its result is the exit status (None: 0).
    A refusal of the gateway's (not found, a rule broken) is one line on stderr, status 1;
    a malformed argument, status 2."""

    async def main() -> int:
        pool = await create_pool(get_settings().database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                return await work(conn) or 0
        finally:
            await pool.close()

    try:
        status = asyncio.run(main())
    except ServiceError as exc:
        click.echo(f"error: {exc.message}", err=True)
        status = 1
    except ValueError as exc:  # a malformed id, or a rule the key breaks
        click.echo(f"error: {exc}", err=True)
        status = 2
    raise SystemExit(status)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, ensure_ascii=False))


@click.group(help="Operator commands against the database.")
def admin() -> None:
    pass


@admin.command("create-team", help="Create a team and print a key for it.")
@click.option("--name", required=True)
@click.option("--key-name", default="default", show_default=True)
def create_team(name: str, key_name: str) -> None:
    settings = get_settings()
    egress = DestinationPolicy.from_settings(
        settings.webhook_allow_networks,
        settings.webhook_deny_networks,
        settings.webhook_allow_hosts,
    )

    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            team = await teams.create_team(
                conn, body=TeamCreate(name=name), audit=CLI, egress=egress
            )
            key_row, key = await teams.issue_key(
                conn, team_id=team["id"], body=KeyCreate(name=key_name), audit=CLI
            )
        echo_json({"team_id": str(team["id"]), "key_id": str(key_row["id"]), "key": key})

    run_with_connection(work)


@admin.command(
    "verify-ledger",
    help="Prove every budget window equals the sum of its ledger entries (exit 1 if not).",
)
def verify_ledger_command() -> None:
    async def work(conn: asyncpg.Connection) -> int:
        return print_ledger_report(await verify_ledger(conn))

    run_with_connection(work)


@admin.command(
    "archive",
    help="Archive the videos of tasks completed since DATE whose Qingbo links still work.",
)
@click.option("--since", required=True, help="A date or time, e.g. 2026-11-01.")
def archive_backfill(since: str) -> None:
    try:
        start = datetime.fromisoformat(since)
    except ValueError:
        raise click.BadParameter(f"{since!r} is not a date or time", param_hint="--since") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)

    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            queued = await archives.backfill(conn, since=start)
        echo_json({"queued_videos": queued, "since": start.isoformat()})

    run_with_connection(work)


@admin.command("audit", help="The audit trail of admin changes, newest first.")
@click.option("--target", default=None, help="A team or key id, or company.")
@click.option("--action", default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
def audit_trail(target: str | None, action: str | None, limit: int) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        page = await list_entries(
            conn, target=target, action=action, since=None, cursor=None, limit=limit
        )
        for row in page["data"]:
            echo_json(row)

    run_with_connection(work)


@admin.group("keys", help="List, issue or revoke a team's API keys.")
def keys() -> None:
    pass


@keys.command("list", help="A team's keys (never the keys themselves).")
@click.option("--team", "team_id", required=True, type=click.UUID, help="Team id.")
def list_keys(team_id: UUID) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        for row in await teams.list_keys(conn, team_id=team_id):
            echo_json(dict(row))

    run_with_connection(work)


@keys.command("issue", help="Issue a key and print it (once).")
@click.option("--team", "team_id", required=True, type=click.UUID, help="Team id.")
@click.option("--name", default="default", show_default=True)
@click.option("--expires-in-days", type=int, default=None)
def issue_key(team_id: UUID, name: str, expires_in_days: int | None) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        body = KeyCreate(name=name, expires_in_days=expires_in_days)
        row, key = await teams.issue_key(conn, team_id=team_id, body=body, audit=CLI)
        echo_json({**dict(row), "key": key})

    run_with_connection(work)


@keys.command("revoke", help="Revoke a key at once.")
@click.argument("key_id", type=click.UUID)
def revoke_key(key_id: UUID) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await teams.revoke_key(conn, key_id=key_id, audit=CLI)
        echo_json({"id": str(key_id), "revoked": True})

    run_with_connection(work)


def print_ledger_report(report: LedgerReport) -> int:
    for row in report.period_mismatches:
        click.echo(
            f"MISMATCH budget {row['budget_id']} window {row['starts_at']} "
            f"shard {row['shard']}: "
            f"spent {row['spent_micros']} vs ledger {row['ledger_spent']}, "
            f"reserved {row['reserved_micros']} vs ledger {row['ledger_reserved']} (micro-USD)"
        )
    for row in report.overdrawn_shards:
        click.echo(
            f"OVERDRAWN budget {row['budget_id']} window {row['starts_at']} "
            f"shard {row['shard']}: spent {row['spent_micros']} + reserved "
            f"{row['reserved_micros']} > allowance {row['allowance_micros']} (micro-USD)"
        )
    for row in report.task_mismatches:
        click.echo(
            f"MISMATCH task {row['id']} ({row['status']}, costs {row['cost_micros']}) in budget "
            f"{row['budget_id']}: reserved {row['reserved']}, settled {row['settled']}, "
            f"outstanding {row['outstanding']}"
        )
    for row in report.orphan_entries:
        missing = " and ".join(
            what for what, gone in (("shard", row["no_shard"]), ("task", row["no_task"])) if gone
        )
        click.echo(
            f"ORPHAN ledger entry {row['id']} ({row['kind']} {row['amount_micros']} micro-USD, "
            f"task {row['task_id']}, budget {row['budget_id']} window {row['starts_at']} "
            f"shard {row['shard']}): no such {missing}"
        )
    for row in report.charge_mismatches:
        click.echo(
            f"CHARGE task {row['task_id']} ({row['status']}, charged {row['charged_micros']}): "
            f"charge row {row['amount_micros']} micro-USD ({row['charge_status']})"
        )
    for row in report.rollup_mismatches:
        click.echo(
            f"ROLL-UP day {row['day']} team {row['team_id']} {row['model']} {row['status']}: "
            f"{row['rolled_up_tasks']} tasks, {row['rolled_up_micros']} micro-USD rolled up, "
            f"against {row['charged_tasks']} tasks, {row['charged_micros']} micro-USD charged"
        )
    for row in report.dispute_mismatches:
        click.echo(
            f"DISPUTE {row['id']} task {row['task_id']} budget {row['budget_id']}: disputed "
            f"{row['disputed']} in the ledger vs excess {row['excess_micros']} (micro-USD)"
        )
    # Shown apart: disputed money is in no budget until an admin accepts it. Only when
    # there is some, so the verdict stays the last line and, when all is well, the only one.
    if report.open_disputes or report.disputed_micros:
        click.echo(
            f"disputed_usd: {format_usd(report.disputed_micros)} in {report.open_disputes} "
            "open charge disputes (not charged to budgets; GET /admin/disputes?status=open)"
        )
    verdict = "OK" if report.ok else "FAILED"
    click.echo(
        f"{verdict}: {report.periods_checked} budget windows checked against the ledger; "
        f"{len(report.period_mismatches)} shard and {len(report.task_mismatches)} task "
        f"mismatches, {len(report.overdrawn_shards)} overdrawn shards, "
        f"{len(report.orphan_entries)} orphan entries, "
        f"{len(report.charge_mismatches)} charge mismatches, "
        f"{len(report.rollup_mismatches)} roll-up mismatches, "
        f"{len(report.dispute_mismatches)} dispute mismatches"
    )
    return 0 if report.ok else 1
