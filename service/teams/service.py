"""Team administration, key issuance and caller authentication."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from service.audit.service import AuditContext, record
from service.catalog.engine import FAMILY_PREFIX, Catalog, shipped_catalog
from service.catalog.generations import DEFAULT_ANSWER_VERSION, all_model_ids
from service.platform.egress import DestinationPolicy, normal_openings, require_allowed
from service.platform.errors import InvalidRequest, NotFound, Unauthorized
from service.teams import repository
from service.teams.key_cache import KeyCache
from service.teams.schemas import KeyCreate, TeamCreate, TeamPatch
from service.web import require_token

KEY_PREFIX = "qgw_"


class _UseThrottle:
    """When this process last wrote a key's last_used_at: at most once a minute per key, so
    authentication stays one read (the UPDATE also checks the minute, across replicas)."""

    def __init__(self, every_seconds: float = 60.0) -> None:
        self.every = every_seconds
        self.written: dict[UUID, float] = {}

    def due(self, key_id: UUID) -> bool:
        now = time.monotonic()
        if now - self.written.get(key_id, -self.every) < self.every:
            return False
        if len(self.written) > 100_000:  # bounded: forget everything now and then
            self.written.clear()
        self.written[key_id] = now
        return True


_LAST_USED = _UseThrottle()


@dataclass(frozen=True)
class Caller:
    """The authenticated team behind an API key."""

    key_id: UUID
    team_id: UUID
    team_name: str
    rpm_limit: int | None
    max_concurrent_tasks: int | None
    allowed_models: list[str] | None
    key_rpm_limit: int | None = None
    # The answer shape the team's apps were written for, unless a call says otherwise.
    api_version: str = DEFAULT_ANSWER_VERSION
    # Destinations an operator opened for the team's webhooks (service/platform/egress.py).
    open_destinations: tuple[str, ...] = ()


def hash_key(key: str) -> bytes:
    # Keys are 256-bit random tokens, so a fast hash cannot be brute-forced; no salt needed.
    return hashlib.sha256(key.encode()).digest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _check_models(models: list[str] | None, catalog: Catalog | None = None) -> list[str] | None:
    """Model ids and `family:<key>` entries (a whole family, its future models included)
    that the catalog in force (else the shipped one) or a generation knows."""
    if models is None:
        return None
    catalog = catalog or shipped_catalog()
    for i, model in enumerate(models):
        if model not in all_model_ids() and not catalog.knows(model):
            hint = "" if model.startswith(FAMILY_PREFIX) else "; a family is written family:<key>"
            raise InvalidRequest(
                f"allowed_models[{i}]: unknown model or family {model!r}{hint}",
                param=f"allowed_models[{i}]",
            )
    return list(dict.fromkeys(models))


async def create_team(
    conn: asyncpg.Connection,
    *,
    body: TeamCreate,
    audit: AuditContext,
    egress: DestinationPolicy,
    catalog: Catalog | None = None,
) -> asyncpg.Record:
    opened = normal_openings(body.open_destinations, param="open_destinations")
    require_allowed(egress.for_team(opened), body.alert_url, param="alert_url")
    async with conn.transaction():
        row = await repository.insert_team(
            conn,
            name=body.name,
            rpm_limit=body.rpm_limit,
            max_concurrent_tasks=body.max_concurrent_tasks,
            allowed_models=_check_models(body.allowed_models, catalog),
            alert_url=body.alert_url,
            api_version=body.api_version,
            webhook_secret=new_webhook_secret(),
            open_destinations=opened,
        )
        if row is None:
            raise InvalidRequest(f"name: a team named {body.name!r} exists already", param="name")
        await record(
            conn, audit, action="team.create", target_type="team", target_id=row["id"],
            after=dict(row),
        )  # fmt: skip
    return row


async def list_teams(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await repository.list_teams(conn)


async def get_team(conn: asyncpg.Connection, *, team_id: UUID) -> asyncpg.Record:
    row = await repository.get_team(conn, team_id)
    if row is None:
        raise NotFound("team not found")
    return row


async def patch_team(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    body: TeamPatch,
    audit: AuditContext,
    egress: DestinationPolicy,
    catalog: Catalog | None = None,
) -> asyncpg.Record:
    changes: dict[str, Any] = {f: getattr(body, f) for f in body.model_fields_set}
    for required in ("name", "api_version", "open_destinations"):
        if required in changes and changes[required] is None:
            raise InvalidRequest(f"{required}: must not be null", param=required)
    if "allowed_models" in changes:
        changes["allowed_models"] = _check_models(changes["allowed_models"], catalog)
    if "open_destinations" in changes:
        changes["open_destinations"] = normal_openings(
            changes["open_destinations"], param="open_destinations"
        )
    async with conn.transaction():
        before = await repository.get_team(conn, team_id, for_update=True)
        if before is None:
            raise NotFound("team not found")
        # The alert URL as the team's destinations will be: given now, or as they are.
        opened = changes.get("open_destinations", before["open_destinations"])
        require_allowed(egress.for_team(opened), body.alert_url, param="alert_url")
        try:
            row = await repository.update_team(conn, team_id, changes)
        except asyncpg.UniqueViolationError:
            raise InvalidRequest(
                "name: a team with this name exists already", param="name"
            ) from None
        assert row is not None
        await record(
            conn, audit, action="team.update", target_type="team", target_id=team_id,
            before=_changed(dict(before), changes), after=_changed(dict(row), changes),
        )  # fmt: skip
    return row


def _changed(row: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    return {field: row[field] for field in changes if field in row}


async def issue_key(
    conn: asyncpg.Connection,
    *,
    team_id: UUID,
    body: KeyCreate,
    audit: AuditContext,
) -> tuple[asyncpg.Record, str]:
    if body.expires_at is not None and body.expires_in_days is not None:
        raise InvalidRequest(
            "expires_in_days: give expires_at or expires_in_days, not both",
            param="expires_in_days",
        )
    expires_at = body.expires_at
    if body.expires_in_days is not None:
        expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidRequest("expires_at: needs a time zone (e.g. ...Z)", param="expires_at")
        if expires_at <= datetime.now(UTC):
            raise InvalidRequest("expires_at: must be in the future", param="expires_at")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        await get_team(conn, team_id=team_id)
        row = await repository.insert_key(
            conn,
            team_id=team_id,
            name=body.name,
            prefix=key[:12],
            key_hash=hash_key(key),
            rpm_limit=body.rpm_limit,
            expires_at=expires_at,
        )
        await record(
            conn, audit, action="key.issue", target_type="key", target_id=row["id"],
            after=dict(row),
        )  # fmt: skip
    return row, key


async def revoke_key(conn: asyncpg.Connection, *, key_id: UUID, audit: AuditContext) -> None:
    async with conn.transaction():
        row = await repository.revoke_key(conn, key_id)
        if row is None:
            raise NotFound("key not found")
        await record(
            conn, audit, action="key.revoke", target_type="key", target_id=key_id,
            before={"prefix": row["prefix"]}, after={"revoked_at": row["revoked_at"]},
        )  # fmt: skip


async def list_keys(conn: asyncpg.Connection, *, team_id: UUID) -> list[asyncpg.Record]:
    await get_team(conn, team_id=team_id)
    return await repository.list_keys(conn, team_id)


@dataclass(frozen=True)
class KnownKey:
    """What the key cache keeps of an authenticated key."""

    caller: Caller
    expires_at: datetime | None


async def authenticate(
    pool: asyncpg.Pool, *, token: str | None, keys: KeyCache[KnownKey] | None = None
) -> Caller:
    """The caller behind `token` (a team API key): from `keys` when this process knows it
    (no connection taken), else from the database."""
    return await authenticate_hash(pool, key_hash=hash_key(require_token(token)), keys=keys)


async def authenticate_hash(
    pool: asyncpg.Pool, *, key_hash: bytes, keys: KeyCache[KnownKey] | None = None
) -> Caller:
    """As `authenticate`, from the key's hash: the console keeps only the hash of the key a
    session signed in with, and checks it on every page (a revoked key's session ends)."""
    known = keys.get(key_hash) if keys is not None else None
    if known is None:
        read_at = keys.generation if keys is not None else 0
        async with pool.acquire() as conn:
            row = await repository.find_active_key(conn, key_hash)
        if row is None:
            raise Unauthorized("invalid or revoked API key")
        known = KnownKey(_caller(row), row["expires_at"])
        if keys is not None:
            keys.put(key_hash, known, read_at=read_at)
    if known.expires_at is not None and known.expires_at <= datetime.now(UTC):
        raise Unauthorized(f"API key expired at {known.expires_at.isoformat()}")
    if _LAST_USED.due(known.caller.key_id):
        async with pool.acquire() as conn:
            await repository.touch_key(conn, known.caller.key_id)
    return known.caller


def _caller(row: asyncpg.Record) -> Caller:
    return Caller(
        key_id=row["key_id"],
        team_id=row["team_id"],
        team_name=row["team_name"],
        rpm_limit=row["rpm_limit"],
        max_concurrent_tasks=row["max_concurrent_tasks"],
        allowed_models=row["allowed_models"],
        key_rpm_limit=row["key_rpm_limit"],
        api_version=row["api_version"],
        open_destinations=tuple(row["open_destinations"]),
    )
