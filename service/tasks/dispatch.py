"""Dispatch: claiming admitted tasks for Qingbo, as the in-flight and submissions-per-second
caps allow, fairly across teams (the claim is repository.claim_pending), and enqueueing
their submits (submission.py sends them).

Postgres is the source of truth: every step is a conditional update on the task's
`dispatch_state`, so a job that runs twice (arq is at-least-once) changes nothing the
second time, and a job that vanished is re-driven from the rows by the crons.
"""

from __future__ import annotations

from service.platform.metrics import DISPATCH_CLAIMED
from service.tasks import repository
from service.tasks.queue import enqueue_submit
from service.tasks.resources import Resources


async def dispatch_pending(res: Resources) -> int:
    """Claim what the in-flight and submissions-per-second caps allow, fairly across teams,
    and enqueue their submits."""
    async with res.pool.acquire() as conn, conn.transaction():
        paused_until = await repository.upstream_paused_until(conn)
        if paused_until is not None:
            return 0
        claimed = await repository.claim_pending(
            conn,
            limit=res.settings.dispatch_batch_size,
            max_in_flight=res.settings.upstream_max_in_flight,
            submits_per_second=res.settings.upstream_max_submits_per_second,
            submit_burst=res.settings.upstream_submit_burst,
        )
    for row in claimed:
        await enqueue_submit(
            res.redis, res.settings.arq_queue_name, row["id"], row["dispatch_attempts"]
        )
    DISPATCH_CLAIMED.inc(len(claimed))
    return len(claimed)
