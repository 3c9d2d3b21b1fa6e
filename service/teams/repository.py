"""SQL for teams and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

_TEAM_COLUMNS = (
    "id, name, rpm_limit, max_concurrent_tasks, allowed_models, alert_url, api_version, "
    "open_destinations, webhook_secret, created_at"
)


_KEY_COLUMNS = (
    "id, team_id, name, prefix, rpm_limit, created_at, expires_at, revoked_at, last_used_at"
)


async def insert_team(
    conn: asyncpg.Connection,
    *,
    name: str,
    rpm_limit: int | None,
    max_concurrent_tasks: int | None,
    allowed_models: list[str] | None,
    alert_url: str | None,
    api_version: str,
    webhook_secret: str,
    open_destinations: list[str],
) -> asyncpg.Record | None:
    """The new team, or None when the name is taken."""
    return await conn.fetchrow(
        f"""
        INSERT INTO teams (name, rpm_limit, max_concurrent_tasks, allowed_models, alert_url,
                           api_version, webhook_secret, open_destinations)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (name) DO NOTHING
        RETURNING {_TEAM_COLUMNS}
        """,
        name,
        rpm_limit,
        max_concurrent_tasks,
        allowed_models,
        alert_url,
        api_version,
        webhook_secret,
        open_destinations,
    )


async def list_teams(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {_TEAM_COLUMNS} FROM teams ORDER BY created_at, id")


async def get_team(
    conn: asyncpg.Connection, team_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE id = $1{lock}", team_id)


async def update_team(
    conn: asyncpg.Connection, team_id: UUID, changes: dict[str, Any]
) -> asyncpg.Record | None:
    allowed = {
        "name",
        "rpm_limit",
        "max_concurrent_tasks",
        "allowed_models",
        "alert_url",
        "api_version",
        "open_destinations",
    }
    columns = [c for c in changes if c in allowed]
    if not columns:
        return await get_team(conn, team_id)
    assignments = ", ".join(f"{col} = ${i + 2}" for i, col in enumerate(columns))
    return await conn.fetchrow(
        f"UPDATE teams SET {assignments}, updated_at = now() WHERE id = $1 "
        f"RETURNING {_TEAM_COLUMNS}",
        team_id,
        *(changes[c] for c in columns),
    )


async def insert_key(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    name: str,
    prefix: str,
    key_hash: bytes,
    rpm_limit: int | None,
    expires_at: datetime | None,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""
        INSERT INTO api_keys (team_id, name, prefix, key_hash, rpm_limit, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING {_KEY_COLUMNS}
        """,
        team_id,
        name,
        prefix,
        key_hash,
        rpm_limit,
        expires_at,
    )
    assert row is not None
    return row


async def revoke_key(conn: asyncpg.Connection, key_id: UUID) -> asyncpg.Record | None:
    """The key as it is now revoked (its first revocation time stays); None if unknown."""
    return await conn.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
        f"RETURNING {_KEY_COLUMNS}",
        key_id,
    )


async def list_keys(conn: asyncpg.Connection, team_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE team_id = $1 ORDER BY created_at, id",
        team_id,
    )


async def touch_key(conn: asyncpg.Connection, key_id: UUID) -> None:
    """Note that the key was used (at most once a minute per key: callers throttle too)."""
    await conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        key_id,
    )


async def key_is_live(conn: asyncpg.Connection, key_id: UUID) -> bool:
    """Neither revoked nor expired (what find_active_key and the expiry check accept)."""
    return bool(
        await conn.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM api_keys
                           WHERE id = $1 AND revoked_at IS NULL
                             AND (expires_at IS NULL OR expires_at > now()))
            """,
            key_id,
        )
    )


async def find_active_key(conn: asyncpg.Connection, key_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT k.id AS key_id, k.team_id, t.name AS team_name, t.rpm_limit,
               t.max_concurrent_tasks, t.allowed_models, t.api_version, t.open_destinations,
               k.rpm_limit AS key_rpm_limit, k.expires_at
        FROM api_keys k JOIN teams t ON t.id = k.team_id
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL
        """,
        key_hash,
    )
