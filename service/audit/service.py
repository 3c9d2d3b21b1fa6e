"""Recording admin changes: who changed what, from where, before and after, in the same
transaction as the change. Secrets never enter the trail: at most their prefix."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.audit import repository
from service.platform.errors import InvalidRequest
from service.platform.logs import redact_url
from service.platform.types import whole_number

logger = logging.getLogger(__name__)

ACTIONS = (
    "team.create",
    "team.update",
    "key.issue",
    "key.revoke",
    "budgets.set",
    "webhook_secret.rotate",
    "dispute.accept",
    "dispute.reject",
    "catalog.replace",
)
SECRET_FIELDS = ("webhook_secret", "previous_webhook_secret", "key")  # shown by prefix
DROPPED_FIELDS = ("key_hash",)  # never shown at all
SHOWN_PREFIX = 10


@dataclass(frozen=True)
class AuditContext:
    """Who asks, from where: the X-Actor header (else "admin"), the client address and
    the request id."""

    actor: str = "admin"
    source: str | None = None
    request_id: str | None = None


def redact(value: Any) -> Any:
    """`value` with every secret cut to its prefix (keys and webhook secrets), and URLs
    (`alert_url`, `callback_url`, ...) without the credentials they carry."""
    if isinstance(value, dict):
        return {
            k: _prefix(v) if k in SECRET_FIELDS else _redact_field(k, v)
            for k, v in value.items()
            if k not in DROPPED_FIELDS
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, UUID):  # asyncpg's own UUID type is no JSON orjson knows
        return str(value)
    return value


def _redact_field(name: str, value: Any) -> Any:
    if name.endswith("url") and isinstance(value, str):
        return redact_url(value)
    return redact(value)


def _prefix(secret: Any) -> Any:
    return secret[:SHOWN_PREFIX] + "…" if isinstance(secret, str) and secret else None


async def record(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    *,
    action: str,
    target_type: str,
    target_id: Any,
    before: Any = None,
    after: Any = None,
) -> None:
    """One entry in the trail (call inside the change's transaction), and its log line."""
    assert action in ACTIONS, action
    target = None if target_id is None else str(target_id)
    entry = await repository.insert(
        conn,
        action=action,
        target_type=target_type,
        target_id=target,
        before=redact(before),
        after=redact(after),
        request_id=ctx.request_id,
        source=ctx.source,
        actor=ctx.actor,
    )
    logger.info(
        "admin change",
        extra={
            "audit_id": entry["id"],
            "action": action,
            "target_type": target_type,
            "target_id": target,
            "actor": ctx.actor,
            "before": entry["before"],
            "after": entry["after"],
        },
    )


async def list_entries(
    conn: asyncpg.Connection,
    *,
    target: str | None,
    action: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """A page of the trail, newest first, and the cursor of the next (None: the last)."""
    if action is not None and action not in ACTIONS:
        raise InvalidRequest(f"action: one of {', '.join(ACTIONS)}", param="action")
    before_id = whole_number(cursor)
    if cursor is not None and before_id is None:
        raise InvalidRequest("cursor: not a cursor this API returned", param="cursor")
    rows = await repository.list_entries(
        conn,
        target=target,
        action=action,
        since=since,
        before_id=before_id,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "data": [dict(r) for r in rows],
        "next_cursor": str(rows[-1]["id"]) if more else None,
    }
