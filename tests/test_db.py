"""Schema status as readiness sees it, and migrations that move money."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from alembic import command
from service.budgets.service import verify_ledger
from service.platform.db import MIGRATIONS_DIR, alembic_config, migrate, schema_status


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_readiness_tolerates_a_newer_schema_but_not_an_older_one() -> None:
    assert schema_status(head_revision()) == "ok"
    assert schema_status("0001_core").startswith("behind")
    assert schema_status("9999_from_a_newer_release") == "ok"
    assert schema_status(None).startswith("behind")


ADMIT = (
    "SELECT (a.task).id FROM qgw_admit_task($1, $2, $3, 'minimax-hailuo-2.3', 'text_to_video', "
    "'{}'::jsonb, $4, 0::smallint, NULL, '{}'::text[], now(), 'UTC', '{50,80,100}'EXTRA) a"
)


@pytest.fixture
async def scratch_database(database_url: str) -> AsyncIterator[str]:
    """An empty database on the tests' server, for migrating step by step."""
    name = f"qgw_migrations_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def ledger_foreign_keys(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_constraint "
            "WHERE conrelid = 'budget_ledger'::regclass AND contype = 'f'"
        )
    )


async def test_budget_shards_migration_keeps_every_micro_dollar_both_ways(
    scratch_database: str,
) -> None:
    """0005 moves each window's money into shard 0 of sixteen and back on downgrade; pods of
    the previous version keep admitting exactly (their 13-argument call) meanwhile. 0006
    drops the ledger's foreign keys, and its downgrade puts them back over the same data."""
    url = scratch_database
    await asyncio.to_thread(migrate, url, "0004_webhooks")
    conn = await asyncpg.connect(url)
    try:
        team = await conn.fetchval(
            "INSERT INTO teams (name, webhook_secret) VALUES ('t', 'whsec_x') RETURNING id"
        )
        key = await conn.fetchval(
            "INSERT INTO api_keys (team_id, name, prefix, key_hash) "
            "VALUES ($1, 'k', 'qgw_', '\\x00') RETURNING id",
            team,
        )
        await conn.execute(
            "INSERT INTO budgets (scope, team_id, period, limit_micros) VALUES ('team', $1, "
            "'total', 10000000)",
            team,
        )
        for i in range(3):
            await conn.fetchval(ADMIT.replace("EXTRA", ""), f"task-{i}", team, key, 3_000_000)
        await conn.execute(
            "UPDATE tasks SET status = 'completed', dispatch_state = 'done' WHERE id = 'task-0'"
        )
        await conn.execute("SELECT qgw_settle_task('task-0', true)")

        await asyncio.to_thread(migrate, url, "head")
        shards = await conn.fetch(
            "SELECT shard, spent_micros, reserved_micros FROM budget_shards ORDER BY shard"
        )
        assert [tuple(s) for s in shards] == [(0, 3_000_000, 6_000_000)] + [
            (i, 0, 0) for i in range(1, 16)
        ]
        assert (await verify_ledger(conn)).ok
        # The previous version's call admits exactly; the current one refuses the fourth.
        await conn.fetchval(ADMIT.replace("EXTRA", ""), "task-3", team, key, 1_000_000)
        with pytest.raises(asyncpg.PostgresError) as refused:
            await conn.fetchval(ADMIT.replace("EXTRA", ", true"), "task-4", team, key, 1_000_000)
        assert refused.value.sqlstate == "QB402"
        assert (await verify_ledger(conn)).ok
        assert await ledger_foreign_keys(conn) == 0  # 0006: verify-ledger checks them
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0005_budget_shards")
        assert await ledger_foreign_keys(conn) == 2  # the entries satisfy them again

        await asyncio.to_thread(command.downgrade, alembic_config(url), "0004_webhooks")
        money = await conn.fetchrow("SELECT spent_micros, reserved_micros FROM budget_periods")
        assert tuple(money) == (3_000_000, 7_000_000)
        await conn.execute("SELECT qgw_settle_task('task-3', false)")  # 0003's own function
        assert await conn.fetchval("SELECT reserved_micros FROM budget_periods") == 6_000_000
    finally:
        await conn.close()
