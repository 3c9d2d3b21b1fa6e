"""What the webhook admin routes do beyond one query: rotating a team's signing secret."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from service.audit.service import AuditContext, record
from service.errors import NotFound
from service.teams.service import new_webhook_secret
from service.webhooks import repository


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
