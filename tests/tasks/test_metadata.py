"""Task metadata: validated and named in errors, stored, echoed in every answer version and
webhook, part of the idempotency comparison, filterable, and never sent to Qingbo; and the
team's spend in the current windows without any budget."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from service.tasks.resources import Resources
from tests.factories import ADMIN, drive_to_end, make_team, submit, task_body
from tests.prices import usd
from tests.webhooks.receiver import running_receiver


def bad(metadata: Any, param: str, rule: str) -> tuple[Any, str, str]:
    return metadata, param, rule


BAD_METADATA = [
    bad(["project"], "metadata", "valid dictionary"),
    bad({f"k{i}": "v" for i in range(17)}, "metadata", "at most 16 keys"),
    bad({"has space": "v"}, "metadata", "key 'has space' must be 1 to 64"),
    bad({"": "v"}, "metadata", "key '' must be 1 to 64"),
    bad({"k" * 65: "v"}, "metadata", "must be 1 to 64"),
    bad({"project": 7}, "metadata.project", "must be a string"),
    bad({"project": None}, "metadata.project", "must be a string"),
    bad({"project": "x" * 513}, "metadata.project", "at most 512 characters"),
    bad({"project": "a\x00b"}, "metadata.project", "NUL"),
    bad({f"key{i}": "v" * 500 for i in range(9)}, "metadata", "at most 4096 bytes"),
]


@pytest.mark.parametrize(("metadata", "param", "rule"), BAD_METADATA)
async def test_bad_metadata_names_the_key_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, metadata: Any, param: str, rule: str
) -> None:
    team = await make_team(client)
    answer = await client.post("/v1/tasks", json=task_body(metadata=metadata), headers=team.headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and rule in error["message"], error
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0


async def test_metadata_is_echoed_everywhere_and_never_sent_upstream(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    labels = {"project": "atlas", "feature": "onboarding.v2", "ticket": "ATL-17"}
    with running_receiver() as receiver:
        task = await submit(client, team, metadata=labels, callback_url=receiver.url)
        assert task["metadata"] == labels
        for version in ("2026-04", "2026-09"):
            read = await client.get(
                f"/v1/tasks/{task['task_id']}",
                headers={**team.headers, "Qingbo-Version": version},
            )
            assert read.json()["metadata"] == labels
        assert await drive_to_end(res, db, task["task_id"]) == "completed"
        event_id = await db.fetchval(
            "SELECT id FROM webhook_events WHERE task_id = $1", task["task_id"]
        )
        from service.webhooks import jobs

        assert await jobs.deliver_webhook({"resources": res}, event_id) == "delivered"
        assert json.loads(receiver.received[0].body)["metadata"] == labels
    [sent] = (await sim.get("/_sim/tasks")).json()["tasks"]
    assert "metadata" not in sent["request"]
    plain = await submit(client, team)
    assert plain["metadata"] == {}


async def test_an_idempotency_key_compares_the_metadata_too(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    headers = {**team.headers, "Idempotency-Key": "order-77"}
    body = task_body(metadata={"project": "atlas"})
    first = await client.post("/v1/tasks", json=body, headers=headers)
    again = await client.post("/v1/tasks", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    other = await client.post(
        "/v1/tasks", json={**body, "metadata": {"project": "zeus"}}, headers=headers
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


async def test_lists_filter_on_metadata_with_status_and_model(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    atlas = await submit(client, team, metadata={"project": "atlas", "tier": "gold"})
    await submit(client, team, metadata={"project": "zeus", "tier": "gold"})
    fast = await submit(
        client, team, model="minimax-hailuo-2.3-fast", metadata={"project": "atlas"}
    )
    await submit(client, team)

    async def ids(**params: str) -> list[str]:
        answer = await client.get("/v1/tasks", params=params, headers=team.headers)
        assert answer.status_code == 200, answer.text
        return [t["task_id"] for t in answer.json()["data"]]

    assert await ids(**{"metadata[project]": "atlas"}) == [fast["task_id"], atlas["task_id"]]
    assert await ids(**{"metadata[project]": "atlas", "metadata[tier]": "gold"}) == [
        atlas["task_id"]
    ]
    both = {"metadata[project]": "atlas", "model": "minimax-hailuo-2.3-fast"}
    assert await ids(**both) == [fast["task_id"]]
    assert await ids(**{"metadata[project]": "atlas", "status": "completed"}) == []
    assert await ids(**{"metadata[project]": "nobody"}) == []
    refused = await client.get("/v1/tasks", params={"metadata[bad key]": "x"}, headers=team.headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "metadata[bad key]"


async def test_usage_shows_spend_without_any_budget(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    empty = (await client.get("/v1/usage", headers=team.headers)).json()
    assert [w["window"] for w in empty["spend"]] == ["day", "week", "month"]
    assert all(w["spent_usd"] == "0.00" and w["tasks"] == 0 for w in empty["spend"])
    assert empty["budgets"] == []

    done = await submit(client, team)
    assert await drive_to_end(res, db, done["task_id"]) == "completed"
    await submit(client, team, model="minimax-hailuo-2.3-fast")  # still queued
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    for window in usage["spend"]:
        assert window["spent_usd"] == usd() and window["reserved_usd"] == usd("fast_768p_6s")
        assert window["tasks"] == 2 and window["resets_at"] > window["starts_at"]
    admin = await client.get(f"/admin/teams/{team.team['id']}/usage", headers=ADMIN)
    assert admin.json()["spend"] == usage["spend"]
    other = await make_team(client)
    assert (await client.get("/v1/usage", headers=other.headers)).json()["spend"][0]["tasks"] == 0
