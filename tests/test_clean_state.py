"""clean_state (tests/conftest.py) empties every table it does not name as kept: the list
is read from the schema, so a table added by a migration is emptied between tests too."""

from __future__ import annotations

import asyncpg
import httpx

from tests.conftest import KEPT_TABLES, RESET_APART, emptying_statement, tables_to_empty
from tests.factories import make_team, submit


async def public_tables(db: asyncpg.Connection) -> set[str]:
    rows = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def rows_in(db: asyncpg.Connection, table: str) -> int:
    count: int = await db.fetchval(f'SELECT count(*) FROM "{table}"')  # noqa: S608 (a name from pg_tables)
    return count


async def test_a_table_new_to_the_schema_is_emptied_before_the_tables_it_references(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    # In a transaction rolled back at the end: no other connection ever sees the table.
    transaction = db.transaction()
    await transaction.start()
    try:
        # No ON DELETE CASCADE: tasks can only be emptied once this table is.
        await db.execute("CREATE TABLE leak_probe (task_id text NOT NULL REFERENCES tasks (id))")
        await db.execute("INSERT INTO leak_probe VALUES ($1)", task["task_id"])
        tables = await tables_to_empty(db)
        assert "leak_probe" in tables
        assert tables.index("leak_probe") < tables.index("tasks")
        assert await rows_in(db, "tasks") == 1

        await db.execute(await emptying_statement(db, tables))
        assert {t: await rows_in(db, t) for t in tables} == dict.fromkeys(tables, 0)
        assert await rows_in(db, "teams") >= 1  # kept
    finally:
        await transaction.rollback()
    assert "leak_probe" not in await public_tables(db)


async def test_every_table_is_emptied_kept_or_reset_and_the_kept_ones_exist(
    db: asyncpg.Connection,
) -> None:
    tables = await public_tables(db)
    emptied = set(await tables_to_empty(db))
    assert KEPT_TABLES.keys() <= tables, "a kept table is no longer in the schema"
    assert RESET_APART.keys() <= tables, "a table reset apart is no longer in the schema"
    assert not emptied & (KEPT_TABLES.keys() | RESET_APART.keys())
    assert emptied | KEPT_TABLES.keys() | RESET_APART.keys() == tables


async def test_a_test_starts_with_only_the_kept_tables_holding_rows(
    db: asyncpg.Connection,
) -> None:
    for table in await tables_to_empty(db):
        assert await rows_in(db, table) == 0, table
    assert await rows_in(db, "catalog_documents") == 0
    paused = await db.fetchrow("SELECT paused_until, pause_reason FROM upstream_state")
    assert tuple(paused) == (None, None)
