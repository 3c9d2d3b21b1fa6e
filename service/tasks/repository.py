"""SQL for tasks as the API reads and ends them, and idempotency keys (their way through
dispatch and Qingbo: pipeline_repository.py). Callers own transactions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.catalog.models import MICROS_PER_QUOTA


async def find_idempotency_key(
    conn: asyncpg.Connection, *, team_id: UUID, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT request_hash, task_id FROM idempotency_keys "
        "WHERE team_id = $1 AND key = $2 AND expires_at > now()",
        team_id,
        key,
    )


async def claim_idempotency_key(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    key: str,
    request_hash: bytes,
    task_id: str,
    ttl_seconds: int,
) -> asyncpg.Record | None:
    """Bind the key to this task; None if it was free, else the live binding that holds it.

    A concurrent request with the same key blocks on the primary key until this
    transaction ends, so exactly one of them creates a task.
    """
    inserted = await conn.fetchval(
        """
        INSERT INTO idempotency_keys (team_id, key, request_hash, task_id, expires_at)
        VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
        ON CONFLICT (team_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, task_id = EXCLUDED.task_id,
                expires_at = EXCLUDED.expires_at
            WHERE idempotency_keys.expires_at <= now()
        RETURNING true
        """,
        team_id,
        key,
        request_hash,
        task_id,
        float(ttl_seconds),
    )
    if inserted:
        return None
    return await find_idempotency_key(conn, team_id=team_id, key=key)


# A task's kept videos (service/archive), for the answers' `archive` field.
ARCHIVE = """
    (SELECT jsonb_agg(jsonb_build_object('idx', a.idx, 'state', a.state, 'bytes', a.bytes,
                                         'sha256', a.sha256, 'stored_at', a.stored_at,
                                         'error', CASE WHEN a.state = 'failed'
                                                       THEN a.last_error END)
                      ORDER BY a.idx)
     FROM video_archives a WHERE a.task_id = tasks.id) AS archive
"""


async def get_task(
    conn: asyncpg.Connection, task_id: str, *, team_id: UUID | None = None
) -> asyncpg.Record | None:
    if team_id is None:
        return await conn.fetchrow(f"SELECT *, {ARCHIVE} FROM tasks WHERE id = $1", task_id)
    return await conn.fetchrow(
        f"SELECT *, {ARCHIVE} FROM tasks WHERE id = $1 AND team_id = $2", task_id, team_id
    )


async def list_tasks(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    status: str | None,
    model: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
    metadata: dict[str, str] | None = None,
    models: list[str] | None = None,
) -> list[asyncpg.Record]:
    """`models`: any of these (a family's models), beside `model`."""
    return await conn.fetch(
        f"""
        SELECT *, {ARCHIVE} FROM tasks
        WHERE team_id = $1
          AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR model = $3)
          AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
          AND ($7::jsonb IS NULL OR request->'metadata' @> $7::jsonb)
          AND ($8::text[] IS NULL OR model = ANY($8::text[]))
        ORDER BY created_at DESC, id DESC
        LIMIT $6
        """,
        team_id,
        status,
        model,
        before[0] if before else None,
        before[1] if before else None,
        limit,
        metadata or None,
        models,
    )


async def finish_task(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    status: str,
    from_states: tuple[str, ...],
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    start_time: datetime | None = None,
    completed_at: datetime | None = None,
    reported_cost_micros: int | None = None,
    billing_status: str | None = None,
    charge_cap: tuple[int, int] | None = None,
) -> asyncpg.Record | None:
    """Move a task to a terminal status once; None if it was not in one of `from_states`.

    `charged_micros` becomes what the task cost: for a completed one Qingbo's reported cost
    where it reported one, else the estimate, at most the estimate times `charge_cap`
    (numerator, denominator; integer division: budgets/disputes.py); nothing for any other
    ending. `upstream_cost_quota` keeps what Qingbo reported, whatever the cap."""
    return await conn.fetchrow(
        """
        UPDATE tasks SET
            status = $2, dispatch_state = 'done',
            progress = CASE WHEN $2 = 'completed' THEN 100 ELSE progress END,
            result = coalesce($4, result), error = $5,
            start_time = coalesce($6, start_time),
            completed_at = coalesce($7, now()),
            charged_micros = CASE WHEN $2 = 'completed'
                                  THEN least(coalesce($8, cost_micros),
                                             cost_micros * $11::bigint / $12::bigint)
                                  ELSE 0 END,
            upstream_cost_quota = coalesce($9, upstream_cost_quota),
            upstream_billing_status = coalesce($10, upstream_billing_status),
            next_poll_at = NULL, updated_at = now()
        WHERE id = $1 AND dispatch_state = ANY($3::text[])
        RETURNING *, (SELECT name FROM teams WHERE teams.id = tasks.team_id) AS team_name,
                  (SELECT api_version FROM teams WHERE teams.id = tasks.team_id)
                      AS team_api_version
        """,
        task_id,
        status,
        list(from_states),
        result,
        error,
        start_time,
        completed_at,
        reported_cost_micros,
        None if reported_cost_micros is None else reported_cost_micros // MICROS_PER_QUOTA,
        billing_status,
        charge_cap[0] if charge_cap else None,
        charge_cap[1] if charge_cap else None,
    )


async def store_media(conn: asyncpg.Connection, task_id: str, media: dict[str, Any]) -> None:
    """The task's Base64 images, beside it (see service/tasks/media.py)."""
    await conn.execute("INSERT INTO task_media (task_id, media) VALUES ($1, $2)", task_id, media)


async def count_by_stage(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT dispatch_state, count(*) AS n FROM tasks "
        "WHERE dispatch_state <> 'done' GROUP BY dispatch_state"
    )
    return {r["dispatch_state"]: r["n"] for r in rows}


async def upstream_pause(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """Until when submissions to Qingbo are paused, and why (None: they are not)."""
    return await conn.fetchrow(
        "SELECT paused_until, pause_reason FROM upstream_state WHERE paused_until > now()"
    )


async def waiting_by_team(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Unfinished tasks of each team that has any: waiting for a slot, and at Qingbo."""
    return await conn.fetch(
        """
        SELECT t.id AS team_id, t.name AS team_name,
               count(*) FILTER (WHERE k.dispatch_state = 'pending') AS waiting,
               count(*) FILTER (WHERE k.dispatch_state <> 'pending') AS in_flight
        FROM tasks k JOIN teams t ON t.id = k.team_id
        WHERE k.dispatch_state <> 'done'
        GROUP BY t.id, t.name ORDER BY waiting DESC, t.name
        """
    )


async def event_counts(conn: asyncpg.Connection, *, event: str, since: datetime) -> int:
    """How many webhook events named `event` were written since `since` (budget alerts)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM webhook_events WHERE event = $1 AND created_at >= $2",
            event,
            since,
        )
    )


async def dispute_count(conn: asyncpg.Connection) -> int | None:
    """Charge disputes recorded, where the gateway records them (None: no such table yet)."""
    if await conn.fetchval("SELECT to_regclass('charge_disputes')") is None:
        return None
    return int(await conn.fetchval("SELECT count(*) FROM charge_disputes"))
