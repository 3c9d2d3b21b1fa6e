"""The money functions' source files and the migrations that install them agree."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncpg

from service.platform.db import SQL_SOURCES, sql_file_digest

VERSIONS = Path(__file__).resolve().parent.parent / "alembic" / "versions"


def pins() -> dict[str, tuple[str, str]]:
    """SQL file -> (the newest migration installing it, the digest it pins)."""
    found: dict[str, tuple[str, str]] = {}
    for migration in sorted(VERSIONS.glob("*.py")):
        tree = ast.parse(migration.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "FILES" for t in node.targets
            ):
                for name, digest in ast.literal_eval(node.value).items():
                    found[name] = (migration.name, digest)
    return found


def test_every_sql_file_is_installed_by_a_migration_pinning_its_current_text() -> None:
    files = sorted(str(p.relative_to(SQL_SOURCES)) for p in SQL_SOURCES.glob("*/sql/*.sql"))
    assert files  # the budgets' functions at least
    pinned = pins()
    assert sorted(pinned) == files, "a SQL file no migration installs (or one that is gone)"
    stale = {
        name: migration
        for name, (migration, digest) in pinned.items()
        if digest != sql_file_digest(name)
    }
    assert not stale, f"changed since their migration: add one installing them again: {stale}"


async def test_the_database_runs_the_files_functions(db: asyncpg.Connection) -> None:
    """At head, each function of the files is the one defined there (its body matches)."""
    for name in pins():
        text = (SQL_SOURCES / name).read_text()
        for line in text.splitlines():
            if line.startswith("CREATE OR REPLACE FUNCTION "):
                function = line.removeprefix("CREATE OR REPLACE FUNCTION ").split("(")[0]
                bodies = await db.fetchval(
                    "SELECT array_agg(prosrc) FROM pg_proc WHERE proname = $1", function
                )
                assert any(b.strip() in text for b in bodies or []), function
