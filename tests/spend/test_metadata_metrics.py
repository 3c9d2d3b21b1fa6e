"""Spend by metadata as a gauge: only the configured keys, their top values, the rest
summed, so Prometheus labels stay bounded and the figures still add up."""

from __future__ import annotations

import dataclasses

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.ops.state_metrics import StateCollector, read_snapshot
from service.platform.money import parse_usd
from service.tasks.resources import Resources
from tests.factories import make_team, task_body
from tests.prices import usd
from tests.spend.test_reports import finish_as


async def test_top_values_of_configured_keys_only(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    projects = ["atlas"] * 3 + ["zeus"] * 2 + ["hermes"] + [None]
    for project in projects:
        metadata = {"project": project, "secret": "s"} if project else {"secret": "s"}
        answer = await client.post(
            "/v1/tasks", json=task_body(metadata=metadata), headers=team.headers
        )
        await finish_as(db, answer.json()["task_id"], "completed")
    settings = res.settings.model_copy(
        update={"metrics_metadata_keys": "project", "metrics_metadata_top": 2}
    )
    snap = await read_snapshot(dataclasses.replace(res, settings=settings))
    price = parse_usd(usd())  # task_body()'s price under the suite's generation
    assert snap.by_metadata == {
        ("project", "atlas"): 3 * price,
        ("project", "zeus"): 2 * price,
        ("project", "(other)"): 2 * price,  # hermes and the task without the key
    }
    collector = StateCollector()
    collector.snapshot = snap
    [family] = [m for m in collector.collect() if m.name == "qgw_spend_by_metadata_usd"]
    assert {s.labels["value"] for s in family.samples} == {"atlas", "zeus", "(other)"}
    assert sum(s.value for s in family.samples) == pytest.approx(7 * price / 1e6)
    unconfigured = await read_snapshot(res)
    assert unconfigured.by_metadata == {}  # "secret" and every other key: never labels


def test_the_setting_refuses_what_is_not_a_key() -> None:
    with pytest.raises(ValueError, match="not a metadata key"):
        Settings(metrics_metadata_keys="project,bad key")
    assert Settings(metrics_metadata_keys=" project , tier ").metadata_metric_keys == [
        "project",
        "tier",
    ]
