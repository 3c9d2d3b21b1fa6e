"""The fault matrix's bookkeeping (tests/e2e/test_faults.py): for each fault, what was
admitted, how it ended, what was lost, what Qingbo was paid twice for, and whether the
ledger balances. The table is printed at the end of the run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from service.budgets.service import verify_ledger
from tests.factories import TeamKey

TERMINAL = ("completed", "failed", "cancelled")
_CALLBACK_TASK = re.compile(r"/internal/qingbo/callback/([^/?]+)")


@dataclass
class FaultRow:
    fault: str
    submitted: int
    completed: int
    failed: int
    lost: int
    duplicated: int
    ledger_balanced: bool

    def cells(self) -> list[str]:
        return [
            self.fault,
            str(self.submitted),
            str(self.completed),
            str(self.failed),
            str(self.lost),
            str(self.duplicated),
            "yes" if self.ledger_balanced else "NO",
        ]


HEADER = ["fault", "submitted", "completed", "failed", "lost", "duplicated at Qingbo", "ledger"]


@dataclass
class FaultTable:
    rows: list[FaultRow] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.rows]
        return "\n".join(lines)


def gateway_task_of(sim_task: dict[str, Any]) -> str | None:
    """Which gateway task a task at Qingbo belongs to: its callback URL names it, and so
    does its Idempotency-Key (qgw-<task id>)."""
    match = _CALLBACK_TASK.search(str(sim_task["request"].get("callback_url") or ""))
    if match:
        return match.group(1)
    key = sim_task.get("idempotency_key") or ""
    return key.removeprefix("qgw-") or None


async def tally(
    fault: str,
    client: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
    admitted: list[tuple[TeamKey, str]],
) -> FaultRow:
    statuses = []
    for team, task_id in admitted:
        answer = await client.get(f"/v1/tasks/{task_id}", headers=team.headers)
        statuses.append(answer.json()["status"] if answer.status_code == 200 else "missing")
    at_qingbo: dict[str, int] = {}
    for sim_task in (await sim.get("/_sim/tasks")).json()["tasks"]:
        owner = gateway_task_of(sim_task)
        if owner is not None:
            at_qingbo[owner] = at_qingbo.get(owner, 0) + 1
    ledger = await verify_ledger(db)
    return FaultRow(
        fault=fault,
        submitted=len(admitted),
        completed=statuses.count("completed"),
        failed=statuses.count("failed"),
        lost=sum(1 for s in statuses if s not in TERMINAL),
        duplicated=sum(n - 1 for n in at_qingbo.values() if n > 1),
        ledger_balanced=ledger.ok,
    )
