"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.ops.state_metrics import STATE, scrape_registry
from service.platform.db import current_revision, schema_status
from service.platform.errors import Unauthorized
from service.platform.metrics import TASK_EVENT_WAITERS
from service.platform.openapi import error_responses
from service.tasks.resources import AppResources
from service.web import require_metrics_token

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
    """Postgres and Redis reachable and the schema at the newest migration. A pool whose
    connections are all held (stuck statements, slow bodies) is not ready either: the
    check waits for one at most QGW_DB_ACQUIRE_TIMEOUT_SECONDS, on the worker too."""
    checks: dict[str, str] = {}
    bound = res.settings.db_acquire_timeout_seconds
    try:
        async with res.pool.acquire(timeout=bound) as conn:
            revision = await current_revision(conn)
        checks["postgres"] = "ok"
        checks["migrations"] = schema_status(revision)
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        async with asyncio.timeout(bound):
            await res.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}},
        **error_responses(Unauthorized),
    },
    dependencies=[Depends(require_metrics_token)],
)
async def metrics(res: AppResources) -> Response:
    """Prometheus text exposition: this process's counters and histograms (all processes'
    under `api --workers N`, see service/platform/metrics.py) and the shared state read now."""
    await STATE.refresh(res)
    if res.notifications is not None:
        TASK_EVENT_WAITERS.set(res.notifications.waiting)
    return Response(generate_latest(scrape_registry()), media_type=CONTENT_TYPE_LATEST)
