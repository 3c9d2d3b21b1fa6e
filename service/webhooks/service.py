"""What the webhook routes do: a task's delivery log, re-sends, rotating a team's signing
secret. Webhooks know tasks only through the events they are handed (the outbox)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from service.audit.service import AuditContext, record
from service.platform.errors import InvalidRequest, NotFound
from service.teams.service import new_webhook_secret
from service.webhooks import repository
from service.webhooks.queue import enqueue_delivery


async def delivery_log(
    conn: asyncpg.Connection, *, task_id: str, team_id: UUID | None, with_bodies: bool
) -> dict[str, Any]:
    """The task's events with every attempt (404 if the task is not the team's; an admin
    passes no team). Answer bodies only `with_bodies`: the receiver's answer is the
    operator's to read, not the team's."""
    if not await repository.task_exists(conn, task_id, team_id=team_id):
        raise NotFound(f"task {task_id} not found")
    rows = await repository.list_for_task(
        conn, task_id=task_id, team_id=team_id, with_bodies=with_bodies
    )
    return {"object": "list", "data": [dict(r) for r in rows]}


async def rotate_secret(
    conn: asyncpg.Connection, *, team_id: UUID, grace_seconds: int, audit: AuditContext
) -> asyncpg.Record:
    """A new secret signs from now on, the previous one beside it for `grace_seconds`;
    audited by prefix only."""
    async with conn.transaction():
        before = await repository.lock_secret(conn, team_id=team_id)
        row = await repository.rotate_secret(
            conn, team_id=team_id, new_secret=new_webhook_secret(), grace_seconds=grace_seconds
        )
        if row is None:
            raise NotFound("team not found")
        await record(
            conn,
            audit,
            action="webhook_secret.rotate",
            target_type="team",
            target_id=team_id,
            before={"webhook_secret": before},
            after={
                "webhook_secret": row["webhook_secret"],
                "previous_secret_expires_at": row["previous_secret_expires_at"],
            },
        )
    return row


async def send_now(redis: ArqRedis, queue: str, event_id: str) -> None:
    """Enqueue an attempt now; if Redis is down the sweeper cron picks the event up (it is
    due in Postgres)."""
    with contextlib.suppress(RedisError, OSError):
        await enqueue_delivery(redis, queue, event_id, f"resend-{uuid.uuid4().hex}")


class PerMinuteLimit(Protocol):
    """The process's rate limiter (service/quotas/limiter.py, a layer above this one)."""

    async def check_counter(
        self, log: str, subject: object, limit: int, *, what: str, name: str = "team"
    ) -> object: ...


async def redeliver(
    conn: asyncpg.Connection,
    redis: ArqRedis,
    *,
    queue: str,
    event_id: str,
    task_id: str,
    team_id: UUID,
    limiter: PerMinuteLimit,
    per_minute: int,
) -> asyncpg.Record:
    """The team's event, due again now whatever its status, and sent; at most `per_minute`
    re-sends a minute per team (429 beyond), so a team cannot make the gateway knock on a
    destination as fast as it likes."""
    await limiter.check_counter("redeliver", team_id, per_minute, what="redeliveries")
    row = await repository.redeliver(conn, event_id=event_id, task_id=task_id, team_id=team_id)
    if row is None:
        raise NotFound(f"delivery {event_id} of task {task_id} not found")
    await send_now(redis, queue, event_id)
    return row


async def redeliver_failed(
    conn: asyncpg.Connection, redis: ArqRedis, *, queue: str, team_id: UUID, since: datetime
) -> int:
    """Every event of the team that failed since `since`, due again and sent; how many."""
    rows = await repository.redeliver_failed(conn, team_id=team_id, since=since)
    for row in rows:
        await send_now(redis, queue, row["id"])
    return len(rows)


DELIVERY_STATUSES = ("pending", "delivered", "failed", "stopped")


async def team_delivery_log(
    conn: asyncpg.Connection, *, team_id: UUID, status: str | None, limit: int = 100
) -> list[asyncpg.Record]:
    """The team's newest webhook events, of one status or all (the console's team log)."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(DELIVERY_STATUSES)}", param="status")
    return await repository.list_for_team(conn, team_id=team_id, status=status, limit=limit)
