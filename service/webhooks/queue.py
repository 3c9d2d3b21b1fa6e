"""Enqueueing webhook deliveries: Redis only schedules, the outbox in Postgres decides."""

from __future__ import annotations

from arq.connections import ArqRedis

DELIVER_JOB = "deliver_webhook"


async def enqueue_delivery(
    redis: ArqRedis, queue: str, event_id: str, attempt: int | str, *, defer_by: float | None = None
) -> None:
    """One job per (event, attempt number): listeners in many workers enqueue it once.
    (A manual re-send passes its own tag instead of a number.)"""
    await redis.enqueue_job(
        DELIVER_JOB,
        event_id,
        _job_id=f"webhook:{event_id}:{attempt}",
        _queue_name=queue,
        _defer_by=defer_by,
    )
