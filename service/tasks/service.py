"""The public task API's behaviour: admit, read, list, cancel."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from service.budgets import repository as budgets
from service.budgets.alerts import count_crossings, write_alert_webhooks
from service.budgets.errors import BudgetShardFull
from service.budgets.service import check_fit
from service.catalog.engine import Catalog, allowed
from service.catalog.intake import CATALOG_DIGEST_KEY, normalize_task, price_micros
from service.catalog.refresh import model_families
from service.catalog.rules import NormalizedTask
from service.catalog.schemas import TaskRequest
from service.platform.db import OnDemandConnection
from service.platform.egress import require_allowed
from service.platform.errors import (
    BudgetExceeded,
    ConcurrencyLimited,
    IdempotencyConflict,
    InvalidRequest,
    ModelNotAllowed,
    NotCancellable,
    NotFound,
    UpstreamUnavailable,
)
from service.platform.metrics import (
    BUDGET_EXCLUSIVE_ADMISSIONS,
    TASKS_ADMITTED,
    TASKS_REJECTED,
)
from service.platform.money import format_usd
from service.quotas.limits import Limits
from service.tasks import announce, quoting, repository
from service.tasks.chains import resolve_chain
from service.tasks.media import split_media
from service.tasks.resources import Resources
from service.tasks.schemas import decode_cursor, encode_cursor
from service.tasks.settlement import finish
from service.tasks.states import DispatchState, TaskStatus
from service.tasks.tracking import refresh_from_upstream
from service.teams.service import Caller
from service.upstream.errors import UpstreamError, UpstreamRejected

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 255


def new_task_id() -> str:
    return "task-" + secrets.token_hex(12)


def request_hash(body: TaskRequest) -> bytes:
    canonical = orjson.dumps(
        body.model_dump(mode="json", exclude_unset=True), option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).digest()


class _Replay(Exception):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


def check_admissible(caller: Caller, task: NormalizedTask, *, count: bool = True) -> None:
    """Rules that depend on the team, checked before any money is reserved."""
    if not allowed(caller.allowed_models, model_id=task.model_id, family=task.family):
        if count:  # an estimate is not a refused submission
            TASKS_REJECTED.labels("model_not_allowed").inc()
        raise ModelNotAllowed(
            f"model: team {caller.team_name!r} may not use {task.model_id} (family {task.family})",
            param="model",
        )


def price_of(res: Resources, task: NormalizedTask, catalog: Catalog) -> int:
    """The task's reservation in micro-dollars (the most it can cost, by the prices the
    configured generation is charged); an unpriced model is refused before anything is
    stored, reserved or sent. `catalog` is the request's own (the digest it stores)."""
    return price_micros(task, res.settings.generation, catalog, res.prices)


def checked_task(res: Resources, body: TaskRequest, catalog: Catalog) -> NormalizedTask:
    """The request checked by `catalog`: the reference to the one in force, read once per
    request, so a replacement meanwhile cannot check by one and price by another."""
    return normalize_task(
        body, res.settings.generation, catalog, max_image_bytes=res.settings.max_image_bytes
    )


@dataclass
class Admission:
    """A submission's answer: the task, and the rate-limit state to tell the caller."""

    row: asyncpg.Record
    headers: dict[str, str] = field(default_factory=dict)


# A rate-limit answer later than this (a stalled Redis) is awaited without holding the
# submission's pooled connection. Normally it comes in one round trip to Redis.
HOLD_CONNECTION_FOR_REDIS_SECONDS = 0.05


async def admit_task(
    res: Resources,
    db: OnDemandConnection,
    *,
    caller: Caller,
    body: TaskRequest,
    idempotency_key: str | None,
) -> Admission:
    """Validate, price, rate-limit and admit a task (budgets reserved in the same statement).
    A request the catalog refuses counts against no limit; the vendor's quote, asked last,
    may still refuse one that has counted."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            param="Idempotency-Key",
        )
    catalog = res.catalog  # this request's catalog, whatever replaces it meanwhile
    task = checked_task(res, body, catalog)
    check_admissible(caller, task)
    egress = res.webhooks.policy.for_team(caller.open_destinations)
    require_allowed(egress, task.callback_url, param="callback_url")
    if task.ref_task_id is not None:  # the source task: the team's own, completed
        task = await resolve_chain(await db.get(), caller=caller, task=task, catalog=catalog)
    cost = price_of(res, task, catalog)  # the most it can cost; an unpriced task refused
    # Only an Idempotency-Key needs the body's hash: skip the canonical dump otherwise.
    digest = request_hash(body) if idempotency_key is not None else b""
    if idempotency_key is not None:
        # A retry of a bound key replays before any limit: it creates and spends nothing,
        # so no rate limit, budget or concurrency cap may refuse it.
        conn = await db.get()
        bound = await repository.find_idempotency_key(
            conn, team_id=caller.team_id, key=idempotency_key
        )
        if bound is not None:
            return Admission(await _replay(conn, caller, bound, digest))
    # Without a key, no connection is held yet: the check is a plain await. With one, a
    # stalled Redis gives the connection back while it answers.
    quota = await db.without(
        res.limiter.check(
            Limits(caller.key_id, caller.team_id, caller.key_rpm_limit, caller.rpm_limit)
        ),
        hold_seconds=HOLD_CONNECTION_FOR_REDIS_SECONDS,
    )
    headers = quota.headers()
    if quoting.asks_quote(res, task, catalog):
        # The vendor's quote (up to QGW_QUOTE_TIMEOUT_SECONDS) only for a request that will
        # be admitted or refused on money: not for a replay nor a rate-limited one. Its
        # round trip is to another service: a held connection is given back meanwhile.
        cost = await db.without(
            quoting.reservation_of(res, task, catalog, bound=cost), hold_seconds=0
        )
    task_id = new_task_id()
    stored_request, media = split_media({**task.request, CATALOG_DIGEST_KEY: catalog.digest})
    new = budgets.NewTask(
        task_id=task_id,
        team_id=caller.team_id,
        api_key_id=caller.key_id,
        model=task.model_id,
        action=task.request["action"],
        request=stored_request,
        cost_micros=cost,
        priority=task.priority,
        callback_url=task.callback_url,
        callback_events=task.callback_events,
        now=res.clock(),
    )
    announce_queued = task.callback_url is not None and TaskStatus.QUEUED in task.callback_events
    zone, percents = res.settings.budget_timezone, res.settings.alert_percents

    async def in_transaction(exclusive: bool) -> asyncpg.Record:
        """The admission with what must commit with it: the Idempotency-Key's claim, the
        request's media, its queued event, the alerts an exclusive admission crossed."""
        conn = await db.get()
        async with conn.transaction():
            if idempotency_key is not None:
                # The key first: a concurrent request with it waits here for this one's
                # commit and replays its task, instead of meeting the budget or the cap
                # this one is about to fill. A refused admission rolls the claim back.
                bound = await repository.claim_idempotency_key(
                    conn,
                    team_id=caller.team_id,
                    key=idempotency_key,
                    request_hash=digest,
                    task_id=task_id,
                    ttl_seconds=res.settings.idempotency_ttl_seconds,
                )
                if bound is not None:
                    _check_same_body(bound, digest)
                    raise _Replay(bound["task_id"])
            if exclusive:
                row = await budgets.reserve_and_insert_exclusively(
                    conn, new, timezone=zone, alert_percents=percents
                )
            else:
                (row,) = await budgets.reserve_and_insert_tasks(conn, [new], timezone=zone)
            if media is not None:
                await repository.store_media(conn, task_id, media)
            if announce_queued:
                await announce.task_event(conn, row, TaskStatus.QUEUED, version=caller.api_version)
            if row["crossings"]:
                await write_alert_webhooks(
                    conn,
                    team_id=caller.team_id,
                    team_name=caller.team_name,
                    task_id=task_id,
                    crossings=row["crossings"],
                )
            return row

    # One fast path (budgets' reserve_and_insert_tasks), taken three ways; the exclusive
    # path only for what it refuses. Without a transaction a statement commits on its own,
    # with no BEGIN/COMMIT round trips.
    try:
        try:
            if idempotency_key is not None or announce_queued or media is not None:
                row = await in_transaction(exclusive=False)
            elif caller.max_concurrent_tasks is None:
                # Shared with the admissions arriving meanwhile (tasks/admission_batch.py).
                row = await res.admissions.admit(new, timezone=zone)
            else:
                # A capped team admits one task at a time, on its row: a batch of one on
                # the request's own connection, holding up no other team's batch.
                (row,) = await budgets.reserve_and_insert_tasks(
                    await db.get(), [new], timezone=zone
                )
        except BudgetShardFull:
            # A budget shard had no room: nothing was stored; decide on whole windows.
            BUDGET_EXCLUSIVE_ADMISSIONS.inc()
            row = await in_transaction(exclusive=True)
    except _Replay as replay:
        conn = await db.get()
        found = await repository.get_task(conn, replay.task_id, team_id=caller.team_id)
        assert found is not None
        return Admission(found, headers)
    except (BudgetExceeded, ConcurrencyLimited) as refusal:
        TASKS_REJECTED.labels(refusal.code).inc()
        raise
    TASKS_ADMITTED.labels(
        caller.team_name, task.model_id, str(task.pricing_body.get("resolution", "default"))
    ).inc()
    if logger.isEnabledFor(logging.INFO):  # the amount is formatted only for a reader
        logger.info(
            "task admitted",
            extra={"task_id": task_id, "team": caller.team_name, "cost_usd": format_usd(cost)},
        )
    if row["crossings"]:
        count_crossings(caller.team_name, row["crossings"])
    res.kicker.kick()
    return Admission(row, headers)


async def estimate_task(
    res: Resources, conn: asyncpg.Connection, *, caller: Caller, body: TaskRequest
) -> dict[str, Any]:
    catalog = res.catalog
    task = checked_task(res, body, catalog)
    check_admissible(caller, task, count=False)
    if task.ref_task_id is not None:
        task = await resolve_chain(conn, caller=caller, task=task, catalog=catalog)
    resolution = task.request.get("resolution", task.pricing_body.get("resolution"))
    duration = task.request.get("duration", task.pricing_body.get("duration"))
    cost = price_of(res, task, catalog)
    fits, checks = await check_fit(
        conn,
        team_id=caller.team_id,
        api_key_id=caller.key_id,
        cost_micros=cost,
        now=res.clock(),
        timezone=res.settings.budget_timezone,
    )
    return {
        "model": task.model_id,
        "family": task.family,
        "catalog_digest": catalog.digest,
        "resolution": resolution,
        "duration": duration,
        "cost_usd": format_usd(cost),
        "fits": fits,
        "budgets": checks,
    }


def _check_same_body(bound: asyncpg.Record, digest: bytes) -> None:
    if bytes(bound["request_hash"]) != digest:
        raise IdempotencyConflict(
            "Idempotency-Key was already used with a different request body",
            param="Idempotency-Key",
        )


async def _replay(
    conn: asyncpg.Connection, caller: Caller, bound: asyncpg.Record, digest: bytes
) -> asyncpg.Record:
    _check_same_body(bound, digest)
    row = await repository.get_task(conn, bound["task_id"], team_id=caller.team_id)
    assert row is not None
    return row


async def require_task(pool: asyncpg.Pool, *, caller: Caller, task_id: str) -> None:
    """Not found unless the task is the caller's (the connection is given back at once)."""
    async with pool.acquire() as conn:
        await get_task(conn, caller=caller, task_id=task_id)


async def get_task(conn: asyncpg.Connection, *, caller: Caller, task_id: str) -> asyncpg.Record:
    row = await repository.get_task(conn, task_id, team_id=caller.team_id)
    if row is None:
        raise NotFound(f"task {task_id} not found")
    return row


async def list_tasks(
    conn: asyncpg.Connection,
    *,
    caller: Caller,
    status: str | None,
    model: str | None,
    limit: int,
    cursor: str | None,
    metadata: dict[str, str] | None = None,
    family: str | None = None,
    catalog: Catalog | None = None,
) -> tuple[list[asyncpg.Record], str | None]:
    """The caller's tasks, newest first; `family` (with the catalog in force, which says
    what its models are, retired ones included) narrows them to that family's models."""
    models = models_of_family(catalog, family) if family and catalog else None
    before = None
    if cursor:
        try:
            before = decode_cursor(cursor)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("cursor: not a cursor this API returned", param="cursor") from None
    rows = await repository.list_tasks(
        conn,
        team_id=caller.team_id,
        status=status,
        model=model,
        limit=limit + 1,
        before=before,
        metadata=metadata,
        models=models,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor


async def cancel_task(res: Resources, *, caller: Caller, task_id: str) -> asyncpg.Record:
    """Cancel locally if not yet sent, at Qingbo if still queued there; else 409. No
    connection is held across the call to Qingbo, and its 2xx is believed only once a
    read of the task shows it cancelled."""
    async with res.pool.acquire() as conn:
        row = await _team_task(conn, caller, task_id)
        not_sent = (DispatchState.PENDING, DispatchState.CLAIMED)
        if row["dispatch_state"] in not_sent:
            async with conn.transaction():
                done = await finish(
                    conn, task_id, status=TaskStatus.CANCELLED, from_states=not_sent
                )
            if done is not None:
                res.kicker.kick()
                return done
            row = await _team_task(conn, caller, task_id)
    _check_cancellable(row)
    try:
        await res.qingbo.cancel_task(row["upstream_task_id"])
    except UpstreamRejected:
        # Qingbo refused: most likely it started processing. Show the caller the truth.
        row = await _reread(res, caller, task_id)
        _check_cancellable(row)
        raise NotCancellable("Qingbo refused to cancel the task") from None
    except UpstreamError as exc:
        raise UpstreamUnavailable(f"could not reach Qingbo to cancel: {exc.message}") from None
    row = await _reread(res, caller, task_id)
    if row["status"] == TaskStatus.CANCELLED:
        return row
    _check_cancellable(row)
    raise NotCancellable(
        f"Qingbo answered the cancel, but the task still reads as {row['status']} there",
        headers={"Retry-After": "1"},
    )


async def _team_task(conn: asyncpg.Connection, caller: Caller, task_id: str) -> asyncpg.Record:
    row = await repository.get_task(conn, task_id, team_id=caller.team_id)
    if row is None:
        raise NotFound(f"task {task_id} not found")
    return row


async def _reread(res: Resources, caller: Caller, task_id: str) -> asyncpg.Record:
    """Read the task from Qingbo, record what it says, and return the row."""
    await refresh_from_upstream(res.pool, res.qingbo, res.settings, task_id)
    async with res.pool.acquire() as conn:
        return await _team_task(conn, caller, task_id)


def _check_cancellable(row: Any) -> None:
    if row["dispatch_state"] == DispatchState.DONE:
        raise NotCancellable(f"task is already {row['status']}")
    if row["status"] == TaskStatus.PROCESSING:
        raise NotCancellable("task is processing at Qingbo; only queued tasks can be cancelled")
    if row["dispatch_state"] != DispatchState.SUBMITTED:
        raise NotCancellable(
            "task is being submitted to Qingbo right now; retry in a second",
            headers={"Retry-After": "1"},
        )


def models_of_family(catalog: Catalog, family: str) -> list[str]:
    """Every model id of `family` the catalog knows (its models, its retired ids, each
    generation's own), or 400 naming `family`."""
    models = sorted(m for m, f in model_families(catalog).items() if f == family)
    if not models:
        raise InvalidRequest(
            f"family: unknown family {family!r}; GET /v1/models lists the families",
            param="family",
        )
    return models
