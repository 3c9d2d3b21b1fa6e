"""The task domain's SQL: tasks as the API reads and ends them, idempotency keys, and a
task's way through the gateway (claims for dispatch, fair and capped; the submit's intent
and outcome; polls; the reconciler's finds; the upstream pause switch). Each move is a
conditional UPDATE naming the state it leaves (tasks/states.py). Callers own transactions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.platform.money import MICROS_PER_QUOTA
from service.tasks.states import DispatchState


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


IN_FLIGHT_STATES = (DispatchState.CLAIMED, DispatchState.SUBMITTING, DispatchState.SUBMITTED)
DISPATCH_LOCK_KEY = 0x51_47_57_01  # pg advisory lock: one dispatcher decides at a time


async def upstream_paused_until(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval("SELECT paused_until FROM upstream_state WHERE paused_until > now()")


async def pause_upstream(conn: asyncpg.Connection, *, seconds: float, reason: str) -> None:
    await conn.execute(
        """
        UPDATE upstream_state SET paused_until = now() + make_interval(secs => $1),
               pause_reason = $2, updated_at = now()
        """,
        seconds,
        reason,
    )


async def claim_pending(
    conn: asyncpg.Connection,
    *,
    limit: int,
    max_in_flight: int,
    submits_per_second: float,
    submit_burst: int,
) -> list[asyncpg.Record]:
    """Claim up to `limit` pending tasks for submission, round-robin across teams.

    Runs under a transaction-scoped advisory lock so that the in-flight count and the
    submission token bucket it reads cannot be raced by another dispatcher: both caps on
    what reaches Qingbo hold across every worker.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", DISPATCH_LOCK_KEY)
    # Left to itself the planner answers "each team's first N waiting tasks" by ANDing two
    # partial indexes, reading every waiting task once per team, several times slower than
    # reading tasks_pending_by_team in order (EXPLAIN ANALYZE on bench/scale.py's data;
    # docs/decisions/017-dispatch-claim.md). This transaction only claims.
    await conn.execute("SET LOCAL enable_bitmapscan = off")
    in_flight = await conn.fetchval(
        "SELECT count(*) FROM tasks WHERE dispatch_state = ANY($1::text[])",
        list(IN_FLIGHT_STATES),
    )
    tokens = await conn.fetchval(
        """
        UPDATE upstream_state SET
            submit_tokens = least($1::float8, coalesce(submit_tokens, $1::float8)
                + extract(epoch FROM clock_timestamp() - coalesce(tokens_at, clock_timestamp()))
                  * $2::float8),
            tokens_at = clock_timestamp()
        RETURNING submit_tokens
        """,
        submit_burst,
        submits_per_second,
    )
    slots = min(limit, max_in_flight - in_flight, int(tokens))
    if slots <= 0:
        return []
    # First each waiting team's fair share of the slots; a team with less leaves slots
    # over, and a second pass shares those among the teams that had more. The first pass
    # claims exactly what one ranking of every team's first `slots` would (those rank
    # ahead of anything a team has beyond its share), but reads teams x share rows, not
    # teams x slots, so a claim costs the same whatever waits (bench/scale.py's dispatch
    # claim).
    claimed = await conn.fetch(_CLAIM_FAIRLY, slots, None)
    if 0 < len(claimed) < slots:
        claimed += await conn.fetch(_CLAIM_FAIRLY, slots - len(claimed), slots - len(claimed))
    await conn.execute("UPDATE upstream_state SET submit_tokens = submit_tokens - $1", len(claimed))
    return claimed


# $1: how many to claim; $2: how many at most per team, or NULL for an even share of $1
# among the teams with a task waiting.
_CLAIM_FAIRLY = """
WITH waiting AS (
    SELECT tm.id FROM teams tm
    WHERE EXISTS (SELECT 1 FROM tasks
                  WHERE team_id = tm.id AND dispatch_state = 'pending' AND dispatch_after <= now())
), ranked AS (
    -- Each team's first tasks, read from its own index range (tasks_pending_by_team).
    SELECT p.id, p.priority, p.created_at,
           row_number() OVER (PARTITION BY w.id
                              ORDER BY p.priority DESC, p.created_at, p.id) AS team_rank
    FROM waiting w
    CROSS JOIN LATERAL (
        SELECT id, priority, created_at FROM tasks
        WHERE team_id = w.id AND dispatch_state = 'pending' AND dispatch_after <= now()
        ORDER BY priority DESC, created_at, id
        LIMIT coalesce($2::int, (SELECT ceil($1::float8 / greatest(count(*), 1))::int
                                 FROM waiting))
    ) p
), picked AS (
    SELECT id FROM ranked ORDER BY team_rank, priority DESC, created_at, id LIMIT $1
)
UPDATE tasks t SET dispatch_state = 'claimed', claimed_at = now(),
       dispatch_attempts = t.dispatch_attempts + 1, updated_at = now()
FROM picked
WHERE t.id = picked.id AND t.dispatch_state = 'pending'
RETURNING t.id, t.dispatch_attempts
"""


async def start_submit(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    attempt: int,
    callback_token_hash: bytes | None,
    api_version: str,
) -> asyncpg.Record | None:
    """Record the intent to call Qingbo (claimed -> submitting), and when it was first sent
    and in which generation; None if not ours to submit."""
    return await conn.fetchrow(
        """
        UPDATE tasks SET dispatch_state = 'submitting', submit_started_at = now(),
               callback_token_hash = $3, first_sent_at = coalesce(first_sent_at, now()),
               upstream_api_version = $4, updated_at = now()
        WHERE id = $1 AND dispatch_state = 'claimed' AND dispatch_attempts = $2
        RETURNING id, team_id, model, request, dispatch_attempts, first_sent_at,
                  (SELECT media FROM task_media m WHERE m.task_id = tasks.id) AS media
        """,
        task_id,
        attempt,
        callback_token_hash,
        api_version,
    )


async def dispatch_state(conn: asyncpg.Connection, task_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT dispatch_state, dispatch_attempts, upstream_api_version, first_sent_at, "
        "ambiguous_resends FROM tasks WHERE id = $1",
        task_id,
    )


async def record_submitted(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    attempt: int,
    upstream_task_id: str,
    status: str,
    progress: int,
    next_poll_in: float,
    pre_consumed_quota: int | None,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE tasks SET dispatch_state = 'submitted', upstream_task_id = $3,
               status = $4, progress = $5, submitted_at = now(), poll_count = 0,
               last_read_at = now(),
               next_poll_at = now() + make_interval(secs => $6),
               upstream_pre_consumed_quota = $7, updated_at = now()
        WHERE id = $1 AND dispatch_state = 'submitting' AND dispatch_attempts = $2
        RETURNING id, model, extract(epoch FROM submitted_at - created_at) AS queue_wait
        """,
        task_id,
        attempt,
        upstream_task_id,
        status,
        progress,
        next_poll_in,
        pre_consumed_quota,
    )


async def return_to_pending(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    from_state: str,
    attempt: int | None,
    delay_seconds: float,
    refund_attempt: bool = False,
    ambiguous_resend: bool = False,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE tasks SET dispatch_state = 'pending',
               dispatch_after = now() + make_interval(secs => $4),
               dispatch_attempts = dispatch_attempts - CASE WHEN $5 THEN 1 ELSE 0 END,
               ambiguous_resends = ambiguous_resends + CASE WHEN $6 THEN 1 ELSE 0 END,
               claimed_at = NULL, submit_started_at = NULL, updated_at = now()
        WHERE id = $1 AND dispatch_state = $2 AND ($3::int IS NULL OR dispatch_attempts = $3)
        RETURNING id
        """,
        task_id,
        from_state,
        attempt,
        delay_seconds,
        refund_attempt,
        ambiguous_resend,
    )


async def claim_due_polls(
    conn: asyncpg.Connection, *, limit: int, lease_seconds: float
) -> list[asyncpg.Record]:
    """Lease the submitted tasks whose next poll is due; a lost job's lease simply expires."""
    return await conn.fetch(
        """
        UPDATE tasks SET next_poll_at = now() + make_interval(secs => $2),
               poll_leased_until = now() + make_interval(secs => $2)
        WHERE id IN (
            SELECT id FROM tasks
            WHERE dispatch_state = 'submitted' AND next_poll_at <= now()
            ORDER BY next_poll_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, poll_count
        """,
        limit,
        lease_seconds,
    )


async def record_progress(
    conn: asyncpg.Connection,
    task_id: str,
    *,
    status: str,
    progress: int,
    start_time: datetime | None,
    next_poll_in: float,
    reset_backoff: bool,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE tasks SET
            status = CASE WHEN status = 'queued' THEN $2 ELSE status END,
            progress = greatest(progress, $3),
            start_time = coalesce(start_time, $4),
            next_poll_at = now() + make_interval(secs => $5),
            poll_count = CASE WHEN $6 THEN 0 ELSE poll_count + 1 END,
            read_failures = 0, poll_leased_until = NULL, last_read_at = now(),
            updated_at = now()
        WHERE id = $1 AND dispatch_state = 'submitted'
        RETURNING id
        """,
        task_id,
        status,
        progress,
        start_time,
        next_poll_in,
        reset_backoff,
    )


async def poll_later(conn: asyncpg.Connection, task_id: str, *, delay_seconds: float) -> None:
    await conn.execute(
        """
        UPDATE tasks SET next_poll_at = now() + make_interval(secs => $2),
               poll_count = poll_count + 1, poll_leased_until = NULL
        WHERE id = $1 AND dispatch_state = 'submitted'
        """,
        task_id,
        delay_seconds,
    )


async def retry_read(conn: asyncpg.Connection, task_id: str, *, delay_seconds: float) -> None:
    """A read that failed (429, 5xx, no answer): read again in `delay_seconds`, one more
    failure in a row; the regular schedule (`poll_count`) is left as it was."""
    await conn.execute(
        """
        UPDATE tasks SET next_poll_at = now() + make_interval(secs => $2),
               read_failures = read_failures + 1, poll_leased_until = NULL
        WHERE id = $1 AND dispatch_state = 'submitted'
        """,
        task_id,
        delay_seconds,
    )


async def pull_watched_polls(
    conn: asyncpg.Connection, task_ids: list[str], *, within_seconds: float
) -> int:
    """Bring the next poll of these watched tasks to `within_seconds` after Qingbo's last
    answer (now, if that is longer ago), unless a read of one is out (its lease holds: one
    read at a time) or failing (its own backoff holds). A task already due that soon is
    left alone, so a watched task is read about every `within_seconds`, not faster. By
    primary key: the cost follows the watched tasks alone."""
    done = await conn.execute(
        """
        WITH watched AS (
            SELECT id, greatest(now(), coalesce(last_read_at, now())
                                       + make_interval(secs => $2)) AS due
            FROM tasks
            WHERE id = ANY($1::text[]) AND dispatch_state = 'submitted' AND read_failures = 0
              AND (poll_leased_until IS NULL OR poll_leased_until <= now())
        )
        UPDATE tasks t SET next_poll_at = w.due
        FROM watched w
        WHERE t.id = w.id AND t.dispatch_state = 'submitted' AND t.next_poll_at > w.due
          -- again on the row as updated, if a claim leased it meanwhile
          AND (t.poll_leased_until IS NULL OR t.poll_leased_until <= now())
        """,
        task_ids,
        within_seconds,
    )
    return int(done.split()[-1])


async def lease_poll(conn: asyncpg.Connection, task_id: str, *, lease_seconds: float) -> str | None:
    """Lease a tracked task's next poll to a read enqueued now, as the poller's claim does
    (if that read is lost, the task is due again when the lease ends); for a task no
    longer tracked, the error code it ended with (None when tracked, or ended without)."""
    row = await conn.fetchrow(
        """
        WITH due AS (
            UPDATE tasks SET next_poll_at = now() + make_interval(secs => $2),
                   poll_leased_until = now() + make_interval(secs => $2)
            WHERE id = $1 AND dispatch_state = 'submitted' RETURNING id
        )
        SELECT (SELECT count(*) FROM due) AS tracked,
               (SELECT error ->> 'code' FROM tasks WHERE id = $1 AND dispatch_state = 'done')
                   AS ended_with
        """,
        task_id,
        lease_seconds,
    )
    assert row is not None
    return None if row["tracked"] else row["ended_with"]


async def requeue_stale_claims(conn: asyncpg.Connection, *, lease_seconds: float) -> list[str]:
    rows = await conn.fetch(
        """
        UPDATE tasks SET dispatch_state = 'pending', claimed_at = NULL, updated_at = now()
        WHERE dispatch_state = 'claimed'
          AND claimed_at < now() - make_interval(secs => $1)
        RETURNING id
        """,
        lease_seconds,
    )
    return [r["id"] for r in rows]


async def stale_submissions(
    conn: asyncpg.Connection, *, lease_seconds: float
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT id, dispatch_attempts, upstream_api_version, first_sent_at, ambiguous_resends
        FROM tasks WHERE dispatch_state = 'submitting'
          AND submit_started_at < now() - make_interval(secs => $1)
        """,
        lease_seconds,
    )


async def callback_token_hash(conn: asyncpg.Connection, task_id: str) -> bytes | None:
    return await conn.fetchval("SELECT callback_token_hash FROM tasks WHERE id = $1", task_id)


async def count_record_failure(conn: asyncpg.Connection, task_id: str) -> int:
    """One more read whose answer could not be recorded (migration 0017); how many so far."""
    tries: int | None = await conn.fetchval(
        "UPDATE tasks SET record_failures = record_failures + 1 WHERE id = $1 "
        "RETURNING record_failures",
        task_id,
    )
    return tries or 0
