"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.budgets import repository as budgets
from service.catalog.models import MICROS_PER_USD
from service.db import current_revision, schema_status
from service.deps import AppResources, Resources
from service.metrics import (
    BUDGET_LIMIT,
    BUDGET_REMAINING,
    BUDGET_RESERVED,
    BUDGET_SPENT,
    QUEUE_JOBS,
    TASK_EVENT_WAITERS,
    TASKS_BY_STAGE,
    WEBHOOK_BACKLOG,
)
from service.tasks import repository
from service.webhooks import repository as webhooks

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        503: {
            "description": "Postgres, Redis or the schema is not ready",
            "content": {"application/json": {}},
        }
    },
)
async def readyz(res: AppResources) -> Any:
    """Postgres and Redis reachable and the schema at the newest migration."""
    checks: dict[str, str] = {}
    try:
        async with res.pool.acquire() as conn:
            revision = await current_revision(conn)
        checks["postgres"] = "ok"
        checks["migrations"] = schema_status(revision)
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        await res.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


_STAGES = ("pending", "claimed", "submitting", "submitted")
_state_read_at = 0.0


async def refresh_state_gauges(res: Resources, *, max_age: float = 2.0) -> None:
    """Backlog gauges from Postgres and Redis, at most every `max_age` seconds per process."""
    global _state_read_at
    now = time.monotonic()
    if now - _state_read_at < max_age:
        return
    _state_read_at = now
    try:
        async with res.pool.acquire() as conn:
            stages = await repository.count_by_stage(conn)
        for stage in _STAGES:
            TASKS_BY_STAGE.labels(stage).set(stages.get(stage, 0))
        queue = res.settings.arq_queue_name
        total = await res.redis.zcard(queue)
        ready = await res.redis.zcount(queue, "-inf", int(time.time() * 1000))
        QUEUE_JOBS.labels("ready").set(ready)
        QUEUE_JOBS.labels("deferred").set(total - ready)
        async with res.pool.acquire() as conn:
            WEBHOOK_BACKLOG.set(await webhooks.backlog(conn))
            standing = await budgets.all_standing(
                conn, now=res.clock(), timezone=res.settings.budget_timezone
            )
        for gauge in (BUDGET_LIMIT, BUDGET_SPENT, BUDGET_RESERVED, BUDGET_REMAINING):
            gauge.clear()  # a removed budget disappears from the scrape
        for row in standing:
            labels = (row["team_name"] or "", row["key_name"] or "", row["scope"], row["period"])
            limit, spent, reserved = (
                row["limit_micros"],
                row["spent_micros"],
                row["reserved_micros"],
            )
            BUDGET_LIMIT.labels(*labels).set(limit / MICROS_PER_USD)
            BUDGET_SPENT.labels(*labels).set(spent / MICROS_PER_USD)
            BUDGET_RESERVED.labels(*labels).set(reserved / MICROS_PER_USD)
            BUDGET_REMAINING.labels(*labels).set(max(0, limit - spent - reserved) / MICROS_PER_USD)
    except Exception as exc:  # a scrape must still answer when a store is down
        logger.warning("backlog gauges not refreshed", extra={"error": type(exc).__name__})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
async def metrics(res: AppResources) -> Response:
    """Prometheus text exposition."""
    await refresh_state_gauges(res)
    if res.events is not None:
        TASK_EVENT_WAITERS.set(res.events.waiting)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
