"""Spend reports grouped by family (issue 30): every model of a family in one group, from
the charges and from the daily roll-up alike, for teams and admins, JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from service.platform.money import format_usd, parse_usd
from service.spend import rollup
from service.spend.service import spend_report
from service.tasks.resources import Resources
from tests.factories import ADMIN, make_team, metric, task_body
from tests.spend.conftest import finish_as

HAILUO = [("minimax-hailuo-2.3", {}), ("minimax-hailuo-2.3-fast", {})]
# Other families are offered under 2026-09 only (a 2026-04 upstream serves Hailuo alone).
OTHERS = [("minimax-h3", {"duration": 5}), ("kling-v3", {"duration": 5})]


async def test_spend_groups_by_family_from_charges_and_the_roll_up(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources
) -> None:
    team = await make_team(client)
    models = HAILUO + (OTHERS if res.settings.generation.offers_catalog else [])
    spent: Counter[str] = Counter()
    for round_ in range(3):
        for model, extra in models:
            answer = await client.post(
                "/v1/tasks", json=task_body(model=model, **extra), headers=team.headers
            )
            assert answer.status_code == 200, answer.text
            task = answer.json()
            status = "failed" if round_ == 2 and model == "minimax-hailuo-2.3" else "completed"
            await finish_as(db, task["task_id"], status)
            family = res.catalog.models[model].family
            spent[family] += parse_usd(task["cost_usd"]) if status == "completed" else 0
    expected = {family: format_usd(micros) for family, micros in spent.items()}
    # Metrics labelled by model carry its family (no more series: one family per model).
    for model, _ in models:
        labels = {"team": team.team["name"], "model": model}
        family = res.catalog.models[model].family
        assert metric(
            "qgw_tasks_terminal_total", **labels, status="completed", family=family
        ) == 3 - (model == "minimax-hailuo-2.3")
    assert "hailuo" in expected and len(expected) == (3 if len(models) == 4 else 1)

    answer = await client.get(
        "/v1/usage/report", params={"group_by": "family"}, headers=team.headers
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    assert {r["family"]: r["spent_usd"] for r in rows} == expected
    hailuo = next(r for r in rows if r["family"] == "hailuo")
    assert (hailuo["tasks"], hailuo["completed"]) == (6, 5)  # two models, one group

    by_model = await client.get(
        "/admin/usage/report",
        params={"group_by": ["team", "family", "model"], "team_id": team.team["id"]},
        headers=ADMIN,
    )
    assert by_model.status_code == 200, by_model.text
    assert {(r["family"], r["model"]) for r in by_model.json()["rows"]} == {
        (res.catalog.models[m].family, m) for m, _ in models
    }
    as_csv = await client.get(
        "/admin/usage/report", params={"group_by": "family", "format": "csv"}, headers=ADMIN
    )
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["family"]: r["spent_usd"] for r in parsed} == expected

    # The daily roll-up keeps models, not families: the report names them the same way.
    async def by_family() -> list[dict[str, Any]]:
        report = await spend_report(
            db,
            from_="2026-01-01",
            to=None,
            group_by=["family"],
            timezone=res.settings.budget_timezone,
            now=datetime.now(UTC),
            team_id=None,
            admin=True,
            catalog=res.catalog,
        )
        return list(report["rows"])

    before = await by_family()
    assert await rollup.fold(db, timezone=res.settings.budget_timezone) > 0
    assert await db.fetchval("SELECT count(*) FROM task_charges WHERE NOT rolled_up") == 0
    assert await by_family() == before
    assert {r["family"]: r["spent_usd"] for r in before} == expected


async def test_family_is_a_grouping_teams_may_ask_for(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    refused = await client.get(
        "/v1/usage/report", params={"group_by": "familie"}, headers=team.headers
    )
    assert refused.status_code == 400
    assert "family" in refused.json()["error"]["message"]
