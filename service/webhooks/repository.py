"""SQL for the webhook outbox and its attempt log. Callers own transactions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

# `last_error` is the generic class the team may read (older events: 'error'); the
# detail is `last_error_detail`, for admins.
_EVENT_COLUMNS = """
    e.id, e.task_id, e.event, e.url, e.status, e.attempts, e.next_attempt_at,
    e.last_status_code,
    CASE WHEN e.last_error IS NOT NULL THEN coalesce(e.last_error_class, 'error') END
        AS last_error,
    e.last_error AS last_error_detail, e.delivered_at, e.created_at
"""


async def insert_event(
    conn: asyncpg.Connection,
    *,
    event_id: str,
    team_id: UUID,
    task_id: str | None,
    event: str,
    url: str,
    payload: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO webhook_events (id, team_id, task_id, event, url, payload) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        event_id,
        team_id,
        task_id,
        event,
        url,
        payload,
    )


async def task_exists(conn: asyncpg.Connection, task_id: str, *, team_id: UUID | None) -> bool:
    """Whether the task exists (and is the team's, unless `team_id` is None)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tasks"
            " WHERE id = $1 AND ($2::uuid IS NULL OR team_id = $2))",
            task_id,
            team_id,
        )
    )


async def insert_team_alert(
    conn: asyncpg.Connection, *, event_id: str, team_id: UUID, event: str, payload: dict[str, Any]
) -> None:
    """Queue `event` for the team's alert_url, if it has one."""
    await conn.execute(
        "INSERT INTO webhook_events (id, team_id, event, url, payload) "
        "SELECT $1, id, $3, alert_url, $4 FROM teams WHERE id = $2 AND alert_url IS NOT NULL",
        event_id,
        team_id,
        event,
        payload,
    )


async def mark_progress_event(
    conn: asyncpg.Connection, task_id: str, *, interval_seconds: float
) -> asyncpg.Record | None:
    """The task, if a throttled 'processing' event of it is due now (and note that it is)."""
    return await conn.fetchrow(
        """
        UPDATE tasks SET webhook_progress_at = now()
        WHERE id = $1 AND status = 'processing' AND callback_url IS NOT NULL
          AND 'processing' = ANY(callback_events)
          AND (webhook_progress_at IS NULL
               OR webhook_progress_at <= now() - make_interval(secs => $2))
        RETURNING *, (SELECT api_version FROM teams WHERE teams.id = tasks.team_id)
                         AS team_api_version
        """,
        task_id,
        interval_seconds,
    )


# An earlier event of the same task to the same URL was answered 410 Gone (a constant
# fragment, no input: the claim skips such an event, stop_if_receiver_gone stops it).
_RECEIVER_GONE = """EXISTS (SELECT 1 FROM webhook_events g
                   WHERE g.task_id = e.task_id AND g.url = e.url AND g.id <> e.id
                     AND g.status = 'stopped' AND g.last_status_code = 410)"""


async def claim_and_start(
    conn: asyncpg.Connection, event_id: str, *, lease_seconds: float, started_at: datetime
) -> asyncpg.Record | None:
    """Take a due event for one attempt and log the attempt as started, in one statement
    (one round trip, atomic without a transaction): a lease, so a dead worker's attempt
    comes back, and any earlier attempt that never ended closed as interrupted. None when
    the event is not due, held by another worker, or its receiver answered 410 Gone for
    this task and URL (see stop_if_receiver_gone)."""
    return await conn.fetchrow(
        f"""
        WITH claimed AS (
            UPDATE webhook_events e SET attempts = e.attempts + 1,
                   leased_until = now() + make_interval(secs => $2), updated_at = now()
            FROM teams t
            WHERE e.id = $1 AND t.id = e.team_id AND e.status = 'pending'
              AND e.next_attempt_at <= clock_timestamp() + interval '0.5 seconds'
              AND (e.leased_until IS NULL OR e.leased_until < now())
              AND NOT {_RECEIVER_GONE}
            RETURNING e.id, e.team_id, e.task_id, e.event, e.url, e.payload, e.attempts,
                      e.created_at, t.webhook_secret, t.previous_webhook_secret,
                      t.previous_secret_expires_at, t.open_destinations
        ), interrupted AS (
            -- Attempts that started and never ended (the worker was killed mid-attempt):
            -- logged as such, so the log shows every attempt.
            UPDATE webhook_attempts SET finished_at = now(), error_class = 'interrupted',
                   error = 'interrupted: the worker stopped during the attempt'
            WHERE event_id = (SELECT id FROM claimed) AND finished_at IS NULL
        ), started AS (
            INSERT INTO webhook_attempts (event_id, attempt, started_at)
            SELECT id, attempts, $3 FROM claimed
            RETURNING id
        )
        SELECT claimed.*, started.id AS attempt_id FROM claimed, started
        """,
        event_id,
        lease_seconds,
        started_at,
    )


async def stop_if_receiver_gone(conn: asyncpg.Connection, event_id: str) -> bool:
    """A receiver that answered 410 Gone for this task and URL gets none of its later
    events either: this one is stopped without an attempt."""
    stopped = await conn.fetchval(
        f"""
        UPDATE webhook_events e SET status = 'stopped', leased_until = NULL,
               last_error = 'the receiver answered 410 Gone to an earlier event',
               last_error_class = 'http_error',
               updated_at = now()
        WHERE e.id = $1 AND e.status = 'pending' AND e.task_id IS NOT NULL
          AND {_RECEIVER_GONE}
        RETURNING e.id
        """,
        event_id,
    )
    return stopped is not None


async def defer(
    conn: asyncpg.Connection, event_id: str, *, attempt_id: int, delay_seconds: float
) -> None:
    """Give a claimed event back without an attempt (its destination is at its
    concurrency cap): the started attempt is unlogged, and the event due again after the
    delay."""
    await conn.execute(
        """
        WITH unlogged AS (DELETE FROM webhook_attempts WHERE id = $3)
        UPDATE webhook_events SET attempts = attempts - 1, leased_until = NULL,
               next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
        WHERE id = $1
        """,
        event_id,
        delay_seconds,
        attempt_id,
    )


async def restart_attempt(conn: asyncpg.Connection, attempt_id: int, started_at: datetime) -> None:
    """The attempt waited for a slot: it starts now."""
    await conn.execute(
        "UPDATE webhook_attempts SET started_at = $2 WHERE id = $1", attempt_id, started_at
    )


async def record_attempt(
    conn: asyncpg.Connection,
    *,
    attempt_id: int,
    event_id: str,
    latency_ms: int,
    status_code: int | None,
    response_excerpt: str | None,
    response_headers: dict[str, str] | None,
    error: str | None,
    error_class: str | None,
    status: str,
    next_attempt_at: datetime | None,
) -> None:
    """Complete one attempt's log and move the event: 'pending' again (retry), or its
    final status. One statement, so both or neither."""
    await conn.execute(
        """
        WITH logged AS (
            UPDATE webhook_attempts SET latency_ms = $7, status_code = $4,
                   response_excerpt = $8, response_headers = $9, error = $5,
                   error_class = $10, finished_at = now()
            WHERE id = $6
        )
        UPDATE webhook_events SET status = $2, next_attempt_at = coalesce($3, next_attempt_at),
               leased_until = NULL, last_status_code = $4, last_error = $5,
               last_error_class = $10,
               delivered_at = CASE WHEN $2 = 'delivered' THEN now() END, updated_at = now()
        WHERE id = $1
        """,
        event_id,
        status,
        next_attempt_at,
        status_code,
        error,
        attempt_id,
        latency_ms,
        response_excerpt,
        response_headers,
        error_class,
    )


async def stop_other_events(conn: asyncpg.Connection, *, task_id: str, url: str) -> None:
    """The receiver answered 410 Gone: nothing more goes to this callback of the task."""
    await conn.execute(
        "UPDATE webhook_events SET status = 'stopped', updated_at = now() "
        "WHERE task_id = $1 AND url = $2 AND status = 'pending'",
        task_id,
        url,
    )


async def due(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Events due for a few seconds that nobody holds: the ones just due are being taken
    by their own notification or job, and sweeping them too would only double the work."""
    return await conn.fetch(
        """
        SELECT id, attempts FROM webhook_events
        WHERE status = 'pending' AND next_attempt_at <= now() - interval '3 seconds'
          AND (leased_until IS NULL OR leased_until < now())
        ORDER BY next_attempt_at LIMIT $1
        """,
        limit,
    )


async def backlog(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'pending'"))


async def list_for_task(
    conn: asyncpg.Connection, *, task_id: str, team_id: UUID | None, with_bodies: bool
) -> list[asyncpg.Record]:
    """A task's events with their attempt logs; `team_id` None reads any team's (admins).
    `error` is the generic class; the detail and the response bodies only `with_bodies`:
    they are the admin's to read."""
    return await conn.fetch(
        f"""
        SELECT {_EVENT_COLUMNS},
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'attempt', a.attempt, 'started_at', a.started_at,
                            'latency_ms', a.latency_ms, 'status_code', a.status_code,
                            'response_headers', coalesce(a.response_headers, '{{}}'),
                            'error', CASE WHEN a.error IS NOT NULL
                                          THEN coalesce(a.error_class, 'error') END)
                          || CASE WHEN $3 THEN jsonb_build_object(
                                 'response_excerpt', a.response_excerpt,
                                 'error_detail', a.error)
                             ELSE '{{}}' END
                          ORDER BY a.attempt, a.id)
                         FROM webhook_attempts a WHERE a.event_id = e.id), '[]') AS attempt_log
        FROM webhook_events e
        WHERE e.task_id = $1 AND ($2::uuid IS NULL OR e.team_id = $2)
        ORDER BY e.created_at, e.id
        """,
        task_id,
        team_id,
        with_bodies,
    )


async def redeliver(
    conn: asyncpg.Connection, *, event_id: str, task_id: str, team_id: UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""
        UPDATE webhook_events e SET status = 'pending', next_attempt_at = now(),
               leased_until = NULL, updated_at = now()
        WHERE e.id = $1 AND e.task_id = $2 AND e.team_id = $3
        RETURNING {_EVENT_COLUMNS}, '[]'::jsonb AS attempt_log
        """,
        event_id,
        task_id,
        team_id,
    )


async def redeliver_failed(
    conn: asyncpg.Connection, *, team_id: UUID, since: datetime
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        UPDATE webhook_events SET status = 'pending', next_attempt_at = now(),
               leased_until = NULL, updated_at = now()
        WHERE team_id = $1 AND status = 'failed' AND created_at >= $2
        RETURNING id, attempts
        """,
        team_id,
        since,
    )


async def lock_secret(conn: asyncpg.Connection, *, team_id: UUID) -> str | None:
    """The team's current signing secret, its row locked until the transaction ends."""
    return await conn.fetchval("SELECT webhook_secret FROM teams WHERE id = $1 FOR UPDATE", team_id)


async def rotate_secret(
    conn: asyncpg.Connection, *, team_id: UUID, new_secret: str, grace_seconds: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE teams SET previous_webhook_secret = webhook_secret,
               previous_secret_expires_at = now() + make_interval(secs => $3),
               webhook_secret = $2, updated_at = now()
        WHERE id = $1
        RETURNING id, webhook_secret, previous_secret_expires_at
        """,
        team_id,
        new_secret,
        grace_seconds,
    )


async def list_for_team(
    conn: asyncpg.Connection, *, team_id: UUID, status: str | None, limit: int
) -> list[asyncpg.Record]:
    """The team's newest events (tasks' and budget alerts'), with the attempts each made."""
    return await conn.fetch(
        f"""
        SELECT {_EVENT_COLUMNS}
        FROM webhook_events e
        WHERE e.team_id = $1 AND ($2::text IS NULL OR e.status = $2)
        ORDER BY e.created_at DESC, e.id DESC
        LIMIT $3
        """,
        team_id,
        status,
        limit,
    )
