"""Reconciliation: re-driving work whose job vanished (Redis flushed, worker killed) from
the rows in Postgres: claims never submitted, submissions whose outcome nobody recorded."""

from __future__ import annotations

import logging

from service.platform.metrics import RECONCILER_REPAIRS
from service.tasks import repository
from service.tasks.dispatch import dispatch_pending
from service.tasks.resources import Resources
from service.tasks.submission import resolve_ambiguous

logger = logging.getLogger(__name__)


async def reconcile(res: Resources) -> dict[str, int]:
    """Re-drive work whose job vanished (Redis flushed, worker killed)."""
    settings = res.settings
    repairs = {"stale_claim": 0, "stale_submit": 0}
    async with res.pool.acquire() as conn:
        requeued = await repository.requeue_stale_claims(
            conn, lease_seconds=settings.claim_lease_seconds
        )
        repairs["stale_claim"] = len(requeued)
        for row in await repository.stale_submissions(
            conn, lease_seconds=settings.submit_lease_seconds
        ):
            await resolve_ambiguous(res, conn, row)
            repairs["stale_submit"] += 1
    for kind, count in repairs.items():
        if count:
            RECONCILER_REPAIRS.labels(kind).inc(count)
            logger.warning("reconciler repaired tasks", extra={"kind": kind, "count": count})
    await dispatch_pending(res)
    return repairs
