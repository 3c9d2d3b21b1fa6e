"""The budgets service's proof of the ledger: verify-ledger names every kind of mismatch."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from service.budgets.service import verify_ledger
from service.cli.admin import print_ledger_report
from service.platform.money import parse_usd
from service.tasks.resources import Resources
from tests import prices
from tests.budgets.test_routes import put_budgets
from tests.factories import make_team, submit


async def test_verify_ledger_names_every_mismatch(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources, capsys: Any
) -> None:
    price = parse_usd(prices.usd())  # the generation's price of task_body()
    team = await make_team(client)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=10 * price)
    await submit(client, team)
    assert print_ledger_report(await verify_ledger(db)) == 0
    assert capsys.readouterr().out.startswith("OK: 1 budget windows checked")
    await db.execute(  # tampering with one shard
        "UPDATE budget_shards SET spent_micros = spent_micros + 1 WHERE shard = 3"
    )
    assert print_ledger_report(await verify_ledger(db)) == 1
    report = capsys.readouterr().out.splitlines()
    assert report[0].startswith("MISMATCH budget ") and "shard 3: spent 1 vs ledger 0" in report[0]
    assert report[-1].startswith("FAILED: 1 budget windows checked")
    await db.execute("UPDATE budget_shards SET spent_micros = spent_micros - 1 WHERE shard = 3")
    assert print_ledger_report(await verify_ledger(db)) == 0
    capsys.readouterr()
    # An entry for a task and a shard that do not exist (the ledger has no foreign keys).
    await db.execute(
        "INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind, "
        "amount_micros) SELECT budget_id, starts_at, 99, 'task_gone', 'm', 'release', 1 "
        "FROM budget_shards LIMIT 1"
    )
    assert print_ledger_report(await verify_ledger(db)) == 1
    report = capsys.readouterr().out.splitlines()
    assert len(report) == 2, report
    assert report[0].startswith("ORPHAN ledger entry") and "task task_gone" in report[0]
    assert report[0].endswith("shard 99): no such shard and task")
    assert report[1].startswith("FAILED") and report[1].endswith(
        ", 1 orphan entries, 0 charge mismatches, 0 roll-up mismatches, 0 dispute mismatches"
    )
