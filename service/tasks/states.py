"""The task state machine: what callers see (`TaskStatus`, Qingbo's five) and where the
gateway is with the task (`DispatchState`), with every allowed move in one table.

Postgres holds both as text with CHECK constraints of exactly these values (migration
0001), and `dispatch_state = 'done'` exactly when the status is terminal. Every move is a
conditional UPDATE naming the state it leaves (tasks/repository.py), so a job that runs
twice changes nothing the second time. README "The life of a task" draws this table.
"""

from __future__ import annotations

from enum import StrEnum

from service.catalog.statuses import TERMINAL_STATUSES, TaskStatus

__all__ = ["TERMINAL_STATUSES", "DispatchState", "TaskStatus", "can_move"]


class DispatchState(StrEnum):
    PENDING = "pending"  # admitted, waiting for its turn (or for a retry's backoff)
    CLAIMED = "claimed"  # picked by dispatch, its submit job enqueued
    SUBMITTING = "submitting"  # a worker is sending it to Qingbo
    SUBMITTED = "submitted"  # Qingbo accepted it; tracked until it ends
    DONE = "done"  # terminal: completed, failed or cancelled


# (from, to): who makes the move.
TRANSITIONS: dict[tuple[DispatchState, DispatchState], str] = {
    (DispatchState.PENDING, DispatchState.CLAIMED): "dispatch.dispatch_pending",
    (DispatchState.PENDING, DispatchState.DONE): "service.cancel_task",
    (DispatchState.CLAIMED, DispatchState.SUBMITTING): "submission.submit",
    (DispatchState.CLAIMED, DispatchState.PENDING): "reconciliation.reconcile (lease expired)",
    (DispatchState.CLAIMED, DispatchState.DONE): "service.cancel_task",
    (DispatchState.SUBMITTING, DispatchState.SUBMITTED): "submission.submit (Qingbo accepted)",
    (DispatchState.SUBMITTING, DispatchState.PENDING): "submission (retry after backoff)",
    (DispatchState.SUBMITTING, DispatchState.DONE): "submission (refused, deadline, ambiguous)",
    (DispatchState.SUBMITTED, DispatchState.DONE): "tracking (Qingbo ended it), cancel_task",
}


def can_move(source: DispatchState, target: DispatchState) -> bool:
    return (source, target) in TRANSITIONS


def mermaid_diagram() -> str:
    """The table as a Mermaid state diagram (the README's copy is checked against it)."""
    lines = ["stateDiagram-v2", "    [*] --> pending: admitted (budgets reserved)"]
    for (source, target), by in TRANSITIONS.items():
        lines.append(f"    {source} --> {target}: {by}")
    lines.append("    done --> [*]")
    return "\n".join(lines)
