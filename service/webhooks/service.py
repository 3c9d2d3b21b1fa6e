"""What the webhook routes do beyond one query: a task's delivery log, rotating a team's
signing secret."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from service.audit.service import AuditContext, record
from service.errors import NotFound
from service.tasks import repository as tasks
from service.teams.service import new_webhook_secret
from service.webhooks import repository


async def delivery_log(
    conn: asyncpg.Connection, *, task_id: str, team_id: UUID | None, with_bodies: bool
) -> dict[str, Any]:
    """The task's events with every attempt (404 if the task is not the team's; an admin
    passes no team). Answer bodies only `with_bodies`: the receiver's answer is the
    operator's to read, not the team's."""
    if await tasks.get_task(conn, task_id, team_id=team_id) is None:
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
