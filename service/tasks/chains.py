"""Chained actions (`ref_task_id`: extend, regenerate, edit, finalize) name the caller's own
gateway task: it must exist in the team, have completed, and be of a model the action
accepts as its source. Checked before any money moves; the upstream is later sent
Qingbo's id for it (submission.py)."""

from __future__ import annotations

import dataclasses

import asyncpg

from service.catalog.engine import Catalog
from service.catalog.errors import ChainSourceNotCompleted, ChainSourceNotFound
from service.catalog.rules import NormalizedTask
from service.platform.errors import InvalidRequest
from service.tasks import repository
from service.tasks.states import TaskStatus
from service.teams.service import Caller


async def resolve_chain(
    conn: asyncpg.Connection, *, caller: Caller, task: NormalizedTask, catalog: Catalog
) -> NormalizedTask:
    """The task, priced with what it inherits from its source; or a refusal naming
    `ref_task_id` (404 task_not_found for an unknown or another team's task, 409 for an
    unfinished one, 400 for a source the action does not take)."""
    ref = task.ref_task_id
    entry = catalog.models.get(task.model_id)
    if ref is None or entry is None or entry.chain is None:
        return task
    chain = entry.chain
    row = await repository.get_task(conn, ref, team_id=caller.team_id)
    if row is None:
        raise ChainSourceNotFound(f"ref_task_id: task {ref} not found", param="ref_task_id")
    if row["status"] != TaskStatus.COMPLETED or not row["upstream_task_id"]:
        raise ChainSourceNotCompleted(
            f"ref_task_id: task {ref} is {row['status']}; only a completed task can be the "
            f"source of {task.request['action']}",
            param="ref_task_id",
        )
    if row["model"] not in chain.source_models:
        raise InvalidRequest(
            f"ref_task_id: task {ref} is a {row['model']} task; {task.model_id} takes "
            f"{', '.join(chain.source_models)} tasks",
            param="ref_task_id",
        )
    source_request = dict(row["request"])
    source_entry = catalog.models.get(row["model"])
    source = source_entry.with_defaults(source_request) if source_entry else source_request
    for name, wanted in chain.source_rules.items():
        if source.get(name) != wanted:
            raise InvalidRequest(
                f"ref_task_id: the source task must have {name} {wanted} "
                f"(task {ref} has {source.get(name)})",
                param="ref_task_id",
            )
    inherited = {k: source_request[k] for k in chain.inherit if k in source_request}
    return dataclasses.replace(task, pricing_body={**inherited, **task.pricing_body})
