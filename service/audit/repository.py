"""SQL for the append-only audit trail (`admin_audit`, migration 0008). Callers own
transactions; Postgres refuses UPDATE, DELETE and TRUNCATE on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def insert(
    conn: asyncpg.Connection,
    *,
    action: str,
    target_type: str,
    target_id: str | None,
    before: Any,
    after: Any,
    request_id: str | None,
    source: str | None,
    actor: str,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO admin_audit (action, target_type, target_id, before, after, request_id,
                                 source, actor)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING *
        """,
        action,
        target_type,
        target_id,
        before,
        after,
        request_id,
        source,
        actor,
    )
    assert row is not None
    return row


async def list_entries(
    conn: asyncpg.Connection,
    *,
    target: str | None,
    action: str | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first; `target` is a target id (a team, key or 'company')."""
    return await conn.fetch(
        """
        SELECT * FROM admin_audit
        WHERE ($1::text IS NULL OR target_id = $1)
          AND ($2::text IS NULL OR action = $2)
          AND ($3::timestamptz IS NULL OR at >= $3)
          AND ($4::bigint IS NULL OR id < $4)
        ORDER BY id DESC
        LIMIT $5
        """,
        target,
        action,
        since,
        before_id,
        limit,
    )
