"""arq entry points of the task domain: thin wrappers that hand the worker's resources to
dispatch, submission, tracking and reconciliation. A job's name is its function's, in Redis
and in the qgw_jobs_* metrics alike."""

from __future__ import annotations

from typing import Any

from service.tasks import dispatch, reconciliation, submission, tracking
from service.tasks.resources import Resources


def _resources(ctx: dict[str, Any]) -> Resources:
    res: Resources = ctx["resources"]
    return res


async def dispatch_pending_tasks(ctx: dict[str, Any]) -> int:
    return await dispatch.dispatch_pending(_resources(ctx))


async def send_to_qingbo(ctx: dict[str, Any], task_id: str, attempt: int) -> str:
    return await submission.submit(_resources(ctx), task_id, attempt)


async def poll_due_tasks(ctx: dict[str, Any]) -> int:
    return await tracking.hand_over_due_polls(_resources(ctx))


async def reconcile_tasks(ctx: dict[str, Any]) -> dict[str, int]:
    return await reconciliation.reconcile(_resources(ctx))
