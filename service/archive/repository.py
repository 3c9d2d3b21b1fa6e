"""SQL for the archive of result videos. Callers own transactions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.archive.store import object_key


async def enqueue(
    conn: asyncpg.Connection, *, task_id: str, team_id: UUID, videos: list[dict[str, Any]]
) -> int:
    """One pending row per result video that has a link (in the finishing transaction)."""
    rows = [
        (
            task_id,
            index,
            team_id,
            video["url"][0],
            video.get("expires_at"),
            object_key(team_id, task_id, index),
        )
        for index, video in enumerate(videos)
        if video.get("url")
    ]
    await conn.executemany(
        """
        INSERT INTO video_archives (task_id, idx, team_id, source_url, expires_at, object_key)
        VALUES ($1, $2, $3, $4, to_timestamp($5::float8), $6)
        ON CONFLICT DO NOTHING
        """,
        rows,
    )
    return len(rows)


async def claim(
    conn: asyncpg.Connection, task_id: str, index: int, *, lease_seconds: float
) -> asyncpg.Record | None:
    """Take a due pending video for one attempt (a lease: a dead worker's comes back)."""
    return await conn.fetchrow(
        """
        UPDATE video_archives SET attempts = attempts + 1,
               leased_until = now() + make_interval(secs => $3)
        WHERE task_id = $1 AND idx = $2 AND state = 'pending'
          AND next_attempt_at <= clock_timestamp() + interval '0.5 seconds'
          AND (leased_until IS NULL OR leased_until < now())
        RETURNING *
        """,
        task_id,
        index,
        lease_seconds,
    )


async def due(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT task_id, idx, attempts FROM video_archives
        WHERE state = 'pending' AND next_attempt_at <= now()
          AND (leased_until IS NULL OR leased_until < now())
        ORDER BY next_attempt_at LIMIT $1
        """,
        limit,
    )


async def record_stored(
    conn: asyncpg.Connection,
    *,
    task_id: str,
    index: int,
    size: int,
    sha256: str,
    content_type: str,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE video_archives SET state = 'stored', bytes = $3, sha256 = $4,
               content_type = $5, stored_at = now(), leased_until = NULL, last_error = NULL
        WHERE task_id = $1 AND idx = $2 AND state = 'pending'
        RETURNING *, extract(epoch FROM now() - created_at) AS waited
        """,
        task_id,
        index,
        size,
        sha256,
        content_type,
    )


async def record_failure(
    conn: asyncpg.Connection, *, task_id: str, index: int, error: str, retry_at: datetime | None
) -> asyncpg.Record | None:
    """Try again at `retry_at`, or (None: the link will have expired) give up: failed."""
    return await conn.fetchrow(
        """
        UPDATE video_archives SET leased_until = NULL, last_error = $3,
               state = CASE WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
               next_attempt_at = coalesce($4, next_attempt_at)
        WHERE task_id = $1 AND idx = $2 AND state = 'pending'
        RETURNING state
        """,
        task_id,
        index,
        error[:500],
        retry_at,
    )


async def for_task(
    conn: asyncpg.Connection, *, task_id: str, team_id: UUID, index: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM video_archives WHERE task_id = $1 AND team_id = $2 AND idx = $3",
        task_id,
        team_id,
        index,
    )


async def waiting_by_expiry(conn: asyncpg.Connection) -> dict[str, int]:
    """Videos not yet stored, by how soon their link expires."""
    rows = await conn.fetch(
        """
        SELECT CASE WHEN expires_at IS NULL THEN 'unknown'
                    WHEN expires_at < now() + interval '6 hours' THEN 'under_6h'
                    WHEN expires_at < now() + interval '24 hours' THEN 'under_24h'
                    ELSE 'later' END AS expiry, count(*) AS n
        FROM video_archives WHERE state = 'pending' GROUP BY 1
        """
    )
    return {row["expiry"]: int(row["n"]) for row in rows}


async def task_videos(conn: asyncpg.Connection, task_id: str) -> list[dict[str, Any]]:
    """The task's archive rows as answers show them (for a payload built in a transaction)."""
    rows = await conn.fetch(
        "SELECT idx, state, bytes, sha256, stored_at FROM video_archives WHERE task_id = $1 "
        "ORDER BY idx",
        task_id,
    )
    return [dict(r) for r in rows]


async def archived_task_version(conn: asyncpg.Connection, task_id: str) -> str | None:
    """When every video of the task is stored: its team's answer version (for the
    `archived` event); else None."""
    row = await conn.fetchrow(
        """
        SELECT bool_and(a.state = 'stored') AS done, min(t.api_version) AS version
        FROM video_archives a JOIN teams t ON t.id = a.team_id
        WHERE a.task_id = $1
        """,
        task_id,
    )
    return str(row["version"]) if row is not None and row["done"] else None


async def backfill(conn: asyncpg.Connection, *, since: datetime) -> int:
    """Queue the videos of tasks completed since `since` that have no archive rows yet and
    whose Qingbo links still work (for turning archiving on later); safe to run twice."""
    rows = await conn.fetch(
        """
        SELECT t.id, t.team_id, t.result FROM tasks t
        WHERE t.status = 'completed' AND t.completed_at >= $1 AND t.result IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM video_archives a WHERE a.task_id = t.id)
        ORDER BY t.completed_at
        """,
        since,
    )
    now = datetime.now(UTC).timestamp()
    queued = 0
    for row in rows:
        videos = [
            v
            for v in row["result"].get("videos") or []
            if v.get("expires_at") is None or v["expires_at"] > now
        ]
        if videos:
            queued += await enqueue(conn, task_id=row["id"], team_id=row["team_id"], videos=videos)
    return queued


async def past_retention(
    conn: asyncpg.Connection, *, days: int, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT task_id, idx, object_key FROM video_archives
        WHERE state = 'stored' AND stored_at < now() - make_interval(days => $1)
        ORDER BY stored_at LIMIT $2
        """,
        days,
        limit,
    )


async def mark_expired(conn: asyncpg.Connection, *, task_id: str, index: int) -> None:
    await conn.execute(
        "UPDATE video_archives SET state = 'expired' WHERE task_id = $1 AND idx = $2 "
        "AND state = 'stored'",
        task_id,
        index,
    )


async def task_status(conn: asyncpg.Connection, *, task_id: str, team_id: UUID) -> str | None:
    """The status of the team's task (None: no such task of the team's)."""
    return await conn.fetchval(
        "SELECT status FROM tasks WHERE id = $1 AND team_id = $2", task_id, team_id
    )
