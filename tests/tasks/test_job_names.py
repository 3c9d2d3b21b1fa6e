"""The arq jobs' names: each its function's, none an HTTP route's, and a submit queued under
the name it had before (a worker of the previous release, during a rolling deploy) is not
lost: a worker drops it, and the reconciler re-dispatches its task under today's name."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import asyncpg
import httpx
from fastapi import APIRouter

import service
from service.config import Settings
from service.tasks import repository
from service.tasks.queue import DISPATCH_JOB, SUBMIT_JOB
from service.tasks.resources import Resources
from service.worker import worker_options
from tests.factories import make_team, start_ready_worker, submit, wait_terminal

PREVIOUS_SUBMIT_JOB = "submit_task"  # its name until the rename, as old workers enqueue it


def route_names() -> set[str]:
    """The names of the API routes (their handlers', by default) of every `*routes` module."""
    names: set[str] = set()
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if module.name.endswith("routes"):
            for value in vars(importlib.import_module(module.name)).values():
                if isinstance(value, APIRouter):
                    names |= {getattr(route, "name", "") for route in value.routes}
    return names


def test_every_job_the_gateway_enqueues_is_registered_under_a_name_no_route_has(
    settings: Settings,
) -> None:
    jobs = {function.name for function in worker_options(settings)["functions"]}
    assert {SUBMIT_JOB, DISPATCH_JOB} <= jobs
    assert SUBMIT_JOB == "send_to_qingbo"
    assert not {PREVIOUS_SUBMIT_JOB, "refresh_task"} & jobs  # no alias, no transitional job
    routes = route_names()
    assert "submit_task" in routes  # the HTTP route the job no longer shares a name with
    assert not jobs & routes


async def test_a_submit_queued_under_the_previous_name_is_re_dispatched(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    start_worker: Any,
) -> None:
    team = await make_team(client)
    task_id = (await submit(client, team))["task_id"]
    # Claimed as dispatch claims, then enqueued as a worker of the previous release did.
    async with db.transaction():
        claimed = await repository.claim_pending(
            db, limit=10, max_in_flight=100, submits_per_second=1000, submit_burst=1000
        )
    attempt = {r["id"]: r["dispatch_attempts"] for r in claimed}[task_id]
    queued = await res.redis.enqueue_job(
        PREVIOUS_SUBMIT_JOB,
        task_id,
        attempt,
        _job_id=f"submit:{task_id}:{attempt}",
        _queue_name=res.settings.arq_queue_name,
    )
    assert queued is not None

    await start_ready_worker(res, start_worker)
    # The worker drops the job it has no function for; once the claim's lease (2 s in the
    # suite) ends, the reconciler puts the task back and dispatch sends it as SUBMIT_JOB.
    assert (await wait_terminal(client, team, task_id, timeout=60))["status"] == "completed"

    # Sent on the attempt dispatch made after the reconciler, not the one the old job held.
    assert await db.fetchval("SELECT dispatch_attempts FROM tasks WHERE id = $1", task_id) == (
        attempt + 1
    )
