"""The arq worker: job functions, the crons that re-drive work from Postgres, and its ctx."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any

import uvicorn
from arq import cron, func
from arq.worker import Worker
from fastapi import FastAPI

from service.archive import jobs as archive_jobs
from service.config import Settings, get_settings
from service.ops import health
from service.platform.errors import install_error_handlers
from service.platform.heap import freeze_startup_heap
from service.platform.metrics import JOB_DURATION, JOBS, JOBS_IN_PROGRESS
from service.spend import jobs as spend_jobs
from service.tasks import jobs, tracking
from service.tasks.notifications import NotificationListener
from service.tasks.reads import ReadLane
from service.tasks.resources import Resources, open_resources, redis_settings
from service.webhooks import jobs as webhook_jobs

WEBHOOK_CHANNEL = "qgw_webhook_events"

EVERY_SECOND = set(range(60))


class _OpsServer(uvicorn.Server):
    """uvicorn inside the worker's loop; the worker (arq) keeps its own signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_ops(stack: AsyncExitStack, settings: Settings, resources: Any) -> None:
    app = FastAPI(title="Qingbo Gateway worker", openapi_url=None)
    install_error_handlers(app)
    app.include_router(health.router)
    app.state.resources = resources
    config = uvicorn.Config(
        app,
        host=settings.worker_http_host,
        port=settings.worker_http_port,
        log_level="warning",
        access_log=False,
        log_config=None,
        lifespan="off",
    )
    server = _OpsServer(config)
    task = asyncio.create_task(server.serve(), name="worker-ops-http")

    async def stop() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(stop)


async def _listen_for_webhook_events(stack: AsyncExitStack, res: Resources) -> None:
    """Attempt an event as soon as its transaction commits (NOTIFY), here or through the
    arq queue (webhook_jobs.first_attempt); every worker hears it. The sweeper cron is the
    backstop."""
    pending: set[asyncio.Task[str]] = set()

    def notified(payload: str) -> None:
        event_id, team = webhook_jobs.parse_notification(payload)
        task = asyncio.create_task(webhook_jobs.first_attempt(res, event_id, team))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def cancel_pending() -> None:
        # An attempt cut short logs 'cancelled' and is retried on schedule; one still
        # waiting its turn was never claimed, so the sweeper finds it.
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    stack.push_async_callback(cancel_pending)  # after the listener has closed (LIFO)
    listener = NotificationListener(
        res.settings.database_url,
        channel=WEBHOOK_CHANNEL,
        on_notify=notified,
        check_seconds=res.settings.listener_check_seconds,
    )
    await listener.start()
    stack.push_async_callback(listener.close)


async def _run_read_lane(stack: AsyncExitStack, res: Resources) -> None:
    """Read the tracked tasks that callbacks and the poll cron hand over (tasks/reads.py),
    counted in the qgw_jobs_* metrics like a job, by the name of the function it runs."""

    async def read(task_id: str) -> str:
        return await tracking.refresh_from_upstream(res.pool, res.qingbo, res.settings, task_id)

    lane = ReadLane(
        res.redis,
        res.settings.arq_queue_name,
        instrumented(read, tracking.refresh_from_upstream.__name__),
        concurrency=res.settings.worker_max_reads,
        timeout_seconds=job_timeout_seconds(res.settings),
    )
    lane.start()
    stack.push_async_callback(lane.close)


async def _startup(ctx: dict[str, Any]) -> None:
    stack = AsyncExitStack()
    ctx["stack"] = stack
    settings: Settings = ctx["settings"]
    ctx["resources"] = resources = await stack.enter_async_context(open_resources(settings))
    await _listen_for_webhook_events(stack, resources)
    await _run_read_lane(stack, resources)
    if settings.worker_http_port:
        await _serve_ops(stack, settings, ctx["resources"])
    freeze_startup_heap()


async def _shutdown(ctx: dict[str, Any]) -> None:
    stack: AsyncExitStack | None = ctx.get("stack")
    if stack is not None:
        await stack.aclose()


def instrumented(
    coroutine: Callable[..., Awaitable[Any]], name: str | None = None
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Count, time and track a job function: qgw_jobs_total{function,outcome},
    qgw_job_duration_seconds{function}, qgw_jobs_in_progress{function} (`name`: the
    label, if not the function's own name)."""
    name = name or coroutine.__name__

    @functools.wraps(coroutine)
    async def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outcome = "error"
        JOBS_IN_PROGRESS.labels(name).inc()
        try:
            result = await coroutine(*args, **kwargs)
            outcome = "ok"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"  # arq's job timeout, or shutdown
            raise
        finally:
            JOBS_IN_PROGRESS.labels(name).dec()
            JOBS.labels(name, outcome).inc()
            JOB_DURATION.labels(name).observe(time.perf_counter() - started)

    return run


def job_timeout_seconds(settings: Settings) -> int:
    """Longer than any one upstream call, with room for the database around it."""
    return int(settings.upstream_timeout_seconds + settings.upstream_connect_timeout_seconds) + 10


def worker_options(settings: Settings) -> dict[str, Any]:
    job_timeout = job_timeout_seconds(settings)

    # keep_result=0: no result is stored, so a job id dedupes only while the job is queued
    # or running, and a later poll or attempt can always be enqueued again.
    def job(coroutine: Any) -> Any:
        return func(
            instrumented(coroutine),
            name=coroutine.__name__,
            timeout=job_timeout,
            keep_result=0,
            max_tries=3,
        )

    reconcile_seconds = set(range(0, 60, settings.reconcile_every_seconds))
    return {
        "functions": [
            job(jobs.dispatch_pending_tasks),
            job(jobs.send_to_qingbo),  # queue.SUBMIT_JOB
            job(webhook_jobs.deliver_webhook),
            # A copy of a long video may take longer than any upstream call.
            func(
                instrumented(archive_jobs.archive_video),
                name=archive_jobs.archive_video.__name__,
                timeout=int(settings.archive_lease_seconds),
                keep_result=0,
                max_tries=3,
            ),
        ],
        "cron_jobs": [
            cron(
                instrumented(jobs.dispatch_pending_tasks),
                name="cron:dispatch",
                second=EVERY_SECOND,
                keep_result=0,
            ),
            cron(
                instrumented(jobs.poll_due_tasks),
                name="cron:poll",
                second=EVERY_SECOND,
                keep_result=0,
            ),
            cron(
                webhook_jobs.sweep_webhooks,
                name="cron:webhooks",
                second=EVERY_SECOND,
                keep_result=0,
            ),
            cron(
                archive_jobs.sweep_archive, name="cron:archive", second=EVERY_SECOND, keep_result=0
            ),
            cron(
                archive_jobs.archive_retention,
                name="cron:archive-retention",
                minute=0,
                second=0,
                keep_result=0,
            ),
            cron(
                # Every 10 s: a report reads at most 10 s of charges besides the roll-up.
                instrumented(spend_jobs.roll_up_spend),
                name="cron:spend-rollup",
                second=set(range(0, 60, 10)),
                keep_result=0,
            ),
            cron(
                instrumented(jobs.reconcile_tasks),
                name="cron:reconcile",
                second=reconcile_seconds,
                keep_result=0,
            ),
        ],
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "redis_settings": redis_settings(settings),
        "queue_name": settings.arq_queue_name,
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_delay_seconds,
        "job_timeout": job_timeout,
        "keep_result": 0,
        # Let an in-flight submit finish on SIGTERM rather than cut it into an ambiguous one.
        "job_completion_wait": job_timeout,
        "ctx": {"settings": settings},
        "handle_signals": True,
    }


def build_worker(settings: Settings | None = None, **overrides: Any) -> Worker:
    options = worker_options(settings or get_settings())
    options.update(overrides)
    return Worker(**options)
