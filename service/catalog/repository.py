"""SQL of the catalog documents operators put in force (`catalog_documents`, migration
0021): the newest row is the catalog in force; with none, each process's own (shipped, or
QGW_CATALOG_FILE) is. Callers own transactions."""

from __future__ import annotations

import asyncpg

STORE_LOCK_KEY = 0x51_47_57_30  # pg advisory lock: one replacement at a time


async def newest_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str | None:
    """The digest in force in the database (None: no document was ever put in force)."""
    digest: str | None = await conn.fetchval(
        "SELECT digest FROM catalog_documents ORDER BY id DESC LIMIT 1"
    )
    return digest


async def newest(conn: asyncpg.Connection | asyncpg.Pool) -> asyncpg.Record | None:
    """The document in force (digest, document text, label, actor, created_at), or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        SELECT digest, document, label, actor, created_at
        FROM catalog_documents ORDER BY id DESC LIMIT 1
        """
    )
    return row


async def lock(conn: asyncpg.Connection) -> None:
    """One replacement at a time (for the rest of the transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", STORE_LOCK_KEY)


async def insert(
    conn: asyncpg.Connection, *, digest: str, document: str, label: str | None, actor: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO catalog_documents (digest, document, label, actor)
        VALUES ($1, $2, $3, $4)
        RETURNING digest, document, label, actor, created_at
        """,
        digest,
        document,
        label,
        actor,
    )
    assert row is not None
    return row
