"""Spend reports on a few hundred finished tasks across models, keys, statuses, metadata
values and a month boundary: the same micro-dollars as /v1/usage, the budgets and
verify-ledger; CSV parsed back; grouping and input rules."""

from __future__ import annotations

import csv
import io
from typing import Any

import asyncpg
import httpx
import pytest

from service.budgets.service import verify_ledger
from service.platform.money import format_usd, parse_usd
from tests.factories import ADMIN, TeamKey, make_team, task_body
from tests.spend.conftest import finish_as


async def report(client: httpx.AsyncClient, team: TeamKey | None, **params: Any) -> dict[str, Any]:
    path, headers = ("/v1/usage/report", team.headers) if team else ("/admin/usage/report", ADMIN)
    answer = await client.get(path, params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_the_report_agrees_with_usage_budgets_and_the_ledger(
    client: httpx.AsyncClient, db: asyncpg.Connection, history: dict[str, Any]
) -> None:
    team, spent = history["budgeted"], history["spent"]
    by = await report(client, team, group_by=["model", "key", "metadata.project", "status"])
    got = {
        (r["status"], r["model"], r["key"].split(" (")[0], r["metadata.project"]): parse_usd(
            r["spent_usd"]
        )
        for r in by["rows"]
    }
    assert got == {k: v for k, v in spent.items()}
    total = sum(spent.values())
    assert by["total"]["spent_usd"] == format_usd(total) and by["total"]["tasks"] == 260
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    month = next(w for w in usage["spend"] if w["window"] == "month")
    assert month["spent_usd"] == format_usd(total) and month["reserved_usd"] == "0.00"
    assert usage["budgets"][0]["spent_usd"] == format_usd(total)  # the budget's own ledger
    assert (await verify_ledger(db)).ok


async def test_the_month_boundary_splits_spend_by_admission(
    client: httpx.AsyncClient, history: dict[str, Any]
) -> None:
    team = history["unbudgeted"]
    this_month, last_month = history["this_month"], history["last_month"]
    months = await report(client, team, group_by=["month"])  # default: this month so far
    assert [r["spent_usd"] for r in months["rows"]] == [format_usd(sum(this_month.values()))]
    wide = await report(
        client,
        team,
        group_by=["month"],
        **{"from": months["from"][:8] + "01", "to": months["to"]},
    )
    assert len(wide["rows"]) == 1  # from the 1st: still only this month
    earlier = await report(
        client, team, group_by=["month", "status"], **{"from": "2020-01-01", "to": "2020-12-31"}
    )
    assert earlier["rows"] == []
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    month = next(w for w in usage["spend"] if w["window"] == "month")
    assert month["spent_usd"] == format_usd(sum(this_month.values())) and month["tasks"] == 30
    everything = await report(
        client, None, group_by=["month"], team_id=team.team["id"], **{"from": "2026-01-01"}
    )
    by_month = [r["spent_usd"] for r in everything["rows"]]
    assert by_month == [format_usd(sum(last_month.values())), format_usd(sum(this_month.values()))]


async def test_admin_groups_by_team_and_csv_parses_back(
    client: httpx.AsyncClient, history: dict[str, Any]
) -> None:
    names = {history[t].team["name"] for t in ("budgeted", "unbudgeted")}
    teams = await report(client, None, group_by=["team", "day"])
    assert {r["team"] for r in teams["rows"]} == names
    answer = await client.get(
        "/admin/usage/report",
        params={"group_by": ["team", "model"]},
        headers={**ADMIN, "Accept": "text/csv"},
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert list(rows[0]) == ["team", "model", "tasks", "completed", "spent_usd"]
    as_json = await report(client, None, group_by=["team", "model"])
    assert rows == [{k: str(v) for k, v in r.items()} for r in as_json["rows"]]
    csv_team = await client.get(
        "/v1/usage/report",
        params={"format": "csv", "group_by": "day"},
        headers=history["budgeted"].headers,
    )
    assert csv_team.text.splitlines()[0] == "day,tasks,completed,spent_usd"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "team"}, "group_by"),
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "metadata.bad key"}, "group_by"),
        ({"group_by": ["day", "day"]}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "to"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "to"),
    ],
)
async def test_bad_report_queries_name_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], param: str
) -> None:
    team = await make_team(client)
    answer = await client.get("/v1/usage/report", params=params, headers=team.headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


async def test_verify_ledger_names_a_charge_that_disagrees_with_its_task(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    answer = await client.post("/v1/tasks", json=task_body(), headers=team.headers)
    task_id = answer.json()["task_id"]
    await finish_as(db, task_id, "completed")
    assert (await verify_ledger(db)).ok
    await db.execute("UPDATE task_charges SET amount_micros = 1 WHERE task_id = $1", task_id)
    report = await verify_ledger(db)
    assert [r["task_id"] for r in report.charge_mismatches] == [task_id] and not report.ok
    await db.execute("DELETE FROM task_charges WHERE task_id = $1", task_id)
    assert [r["amount_micros"] for r in (await verify_ledger(db)).charge_mismatches] == [None]


async def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Issue 31, point 7: metadata is the app's input, and a spreadsheet runs a cell that
    starts with = + - @, or a TAB or CR before one, as a formula (OWASP CSV injection)."""
    team = await make_team(client)
    dangerous = ["=1+2", "+1+2", "-1+2", "@SUM(A1)", "\t=1+2", "\r=1+2"]
    for value in [*dangerous, "plain"]:
        body = {**task_body(), "metadata": {"project": value}}
        answer = await client.post("/v1/tasks", json=body, headers=team.headers)
        assert answer.status_code == 200, answer.text
        await finish_as(db, answer.json()["task_id"], "completed")
    answer = await client.get(
        "/v1/usage/report",
        params={"format": "csv", "group_by": "metadata.project"},
        headers=team.headers,
    )
    rows = csv.DictReader(io.StringIO(answer.text, newline=""))
    cells = {r["metadata.project"] for r in rows}
    assert cells == {"'" + v for v in dangerous} | {"plain"}
