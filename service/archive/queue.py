"""Enqueueing archive copies: Redis only schedules, video_archives in Postgres decides."""

from __future__ import annotations

from arq.connections import ArqRedis

ARCHIVE_JOB = "archive_video"


async def enqueue_archive(
    redis: ArqRedis, queue: str, task_id: str, index: int, attempts: int
) -> None:
    """One job per (video, attempt number): sweeps in many workers enqueue it once."""
    await redis.enqueue_job(
        ARCHIVE_JOB,
        task_id,
        index,
        _job_id=f"archive:{task_id}:{index}:{attempts}",
        _queue_name=queue,
    )
