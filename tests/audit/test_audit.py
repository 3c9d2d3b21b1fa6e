"""The audit trail: every admin change with who, when, from where, before and after, no
secret in it, filters and pages; Postgres refuses to change or remove an entry."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import ADMIN

ALICE = {**ADMIN, "X-Actor": "alice@finance"}


async def audit(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await client.get("/admin/audit", params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_every_admin_change_is_recorded_without_secrets(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    created = await client.post("/admin/teams", json={"name": "audited-video"}, headers=ALICE)
    team = created.json()
    team_id = team["id"]
    secret = team["webhook_secret"]
    await client.patch(
        f"/admin/teams/{team_id}", json={"api_version": "2026-09", "rpm_limit": 30}, headers=ALICE
    )
    issued = (
        await client.post(
            f"/admin/teams/{team_id}/keys",
            json={"name": "ci", "expires_in_days": 30},
            headers=ADMIN,
        )
    ).json()
    with caplog.at_level(logging.INFO, logger="service.audit.service"):
        for limit in ("10.00", "25.00"):
            put = await client.put(
                f"/admin/teams/{team_id}/budgets",
                json={"budgets": [{"window": "month", "limit_usd": limit}]},
                headers=ALICE,
            )
            assert put.status_code == 200
    rotated = (
        await client.post(f"/admin/teams/{team_id}/webhook-secret/rotate", headers=ADMIN)
    ).json()
    await client.delete(f"/admin/keys/{issued['id']}", headers=ADMIN)

    entries = (await audit(client, target=team_id))["data"]
    assert [e["action"] for e in entries] == [
        "webhook_secret.rotate",
        "budgets.set",
        "budgets.set",
        "team.update",
        "team.create",
    ]
    raise_, first = entries[1], entries[2]
    assert first["before"]["budgets"] == {} and first["after"]["budgets"] == {"month": "10.00"}
    assert raise_["before"]["budgets"] == {"month": "10.00"}
    assert raise_["after"]["budgets"] == {"month": "25.00"}
    assert raise_["actor"] == "alice@finance" and raise_["source"] == "127.0.0.1"
    assert raise_["request_id"] == put.headers["x-request-id"]
    update = entries[3]
    assert update["before"] == {"api_version": "2026-04", "rpm_limit": None}
    assert update["after"] == {"api_version": "2026-09", "rpm_limit": 30}
    assert entries[4]["after"]["webhook_secret"] == secret[:10] + "…"
    assert entries[0]["after"]["webhook_secret"] == rotated["webhook_secret"][:10] + "…"
    keys = (await audit(client, target=issued["id"]))["data"]
    assert [e["action"] for e in keys] == ["key.revoke", "key.issue"]
    assert keys[1]["after"]["prefix"] == issued["prefix"] and keys[1]["actor"] == "admin"

    everything = str((await audit(client, limit=500))["data"])
    for leaked in (secret, rotated["webhook_secret"], issued["key"]):
        assert leaked not in everything
    changes = [r for r in caplog.records if r.getMessage() == "admin change"]
    assert [r.action for r in changes] == ["budgets.set", "budgets.set"]  # type: ignore[attr-defined]
    assert changes[-1].after["budgets"] == {"month": "25.00"}  # type: ignore[attr-defined]


async def test_company_and_key_budgets_filters_and_pages(client: httpx.AsyncClient) -> None:
    await client.put(
        "/admin/budgets",
        json={"budgets": [{"window": "day", "limit_usd": "100.00"}]},
        headers=ADMIN,
    )
    company = (await audit(client, target="company", action="budgets.set"))["data"][0]
    assert company["target_type"] == "company" and company["after"]["budgets"] == {"day": "100.00"}
    await client.put("/admin/budgets", json={"budgets": []}, headers=ADMIN)
    page = await audit(client, action="budgets.set", limit=1)
    assert len(page["data"]) == 1 and page["next_cursor"]
    following = await audit(client, action="budgets.set", limit=1, cursor=page["next_cursor"])
    assert following["data"][0]["id"] < page["data"][0]["id"]
    since = await audit(client, since=page["data"][0]["at"])
    assert all(e["at"] >= page["data"][0]["at"] for e in since["data"])
    for bad in ({"action": "team.delete"}, {"cursor": "abc"}):
        refused = await client.get("/admin/audit", params=bad, headers=ADMIN)
        assert refused.status_code == 400


async def test_postgres_refuses_to_change_the_trail(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post("/admin/teams", json={"name": "audited-immutable"}, headers=ADMIN)
    for sql in (
        "UPDATE admin_audit SET actor = 'mallory'",
        "DELETE FROM admin_audit",
        "TRUNCATE admin_audit",
    ):
        with pytest.raises(asyncpg.PostgresError) as refused:
            await db.execute(sql)
        assert refused.value.sqlstate == "QB403" and "append-only" in str(refused.value)
    assert await db.fetchval("SELECT count(*) FROM admin_audit WHERE actor = 'mallory'") == 0
