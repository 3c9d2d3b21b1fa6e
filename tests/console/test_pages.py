"""The console's pages over HTTP: the spend CSV is the report's to the micro-dollar, budgets
as they stand, admins' changes audited with the signed-in admin as actor, keys issued once
and revoked, the delivery log, the operations page."""

from __future__ import annotations

import re

import asyncpg
import httpx

from service.tasks import repository as tasks_repository
from tests.console.helpers import admin_signed_in, csrf_of, signed_in
from tests.console.test_routes import second_client
from tests.factories import ADMIN, make_team, submit, task_body
from tests.spend.conftest import finish_as


async def finished_history(client: httpx.AsyncClient, db: asyncpg.Connection, team: object) -> None:
    """Tasks finished over the last days: two models, two projects, one failure."""
    plan = [
        (0, "minimax-hailuo-2.3", "atlas", "completed"),
        (0, "minimax-hailuo-2.3", "zeus", "completed"),
        (3, "minimax-hailuo-2.3-fast", "atlas", "completed"),
        (12, "minimax-hailuo-2.3", None, "completed"),
        (12, "minimax-hailuo-2.3", "atlas", "failed"),
        (40, "minimax-hailuo-2.3", "atlas", "completed"),  # outside the 30 days
    ]
    for days_ago, model, project, status in plan:
        extra = {"metadata": {"project": project}} if project else {}
        task = await submit(client, team, model=model, **extra)  # type: ignore[arg-type]
        await db.execute(
            "UPDATE tasks SET created_at = now() - make_interval(days => $2) WHERE id = $1",
            task["task_id"],
            days_ago,
        )
        await finish_as(db, task["task_id"], status)


async def test_the_spend_csv_is_the_reports(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    await finished_history(client, db, team)
    await signed_in(client, team.key)
    page = await client.get("/console/money")
    assert page.status_code == 200
    from_, to = re.search(r"admitted from (\S+) to (\S+) \(exclusive\)", page.text).groups()  # type: ignore[union-attr]
    for group, params in (
        ("group=day", {"group_by": "day"}),
        ("group=model", {"group_by": "model"}),
        ("group=key", {"group_by": "key"}),
        ("metadata_key=project", {"group_by": "metadata.project"}),
    ):
        mine = await client.get(f"/console/money/spend.csv?{group}")
        assert mine.status_code == 200 and mine.headers["content-type"].startswith("text/csv")
        api = await client.get(
            "/v1/usage/report",
            params={**params, "from": from_, "to": to, "format": "csv"},
            headers=team.headers,
        )
        assert mine.text == api.text, group
        assert len(mine.text.splitlines()) > 1
    report = (
        await client.get("/v1/usage/report", params={"from": from_, "to": to}, headers=team.headers)
    ).json()
    assert f"last 30 days: ${report['total']['spent_usd']}" in page.text


async def test_budgets_stand_as_bars_and_an_admin_changes_them_audited(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    team_id = team.team["id"]
    await client.put(
        f"/admin/teams/{team_id}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "1.00"}]},
        headers=ADMIN,
    )
    await submit(client, team)  # reserved, not finished
    token = await admin_signed_in(client, name="Grace Hopper")
    page = await client.get(f"/console/money?team={team_id}")
    assert "team, month" in page.text and "reserved of $1.00" in page.text
    saved = await client.post(
        f"/console/teams/{team_id}/budgets",
        data={"csrf": token, "limit_day": "0.50", "limit_month": "20"},
    )
    assert saved.status_code == 303
    budgets = (await client.get(f"/admin/teams/{team_id}/budgets", headers=ADMIN)).json()
    assert {(b["window"], b["limit_usd"]) for b in budgets["budgets"]} == {
        ("day", "0.50"),
        ("month", "20.00"),
    }
    limits = await client.post(
        f"/console/teams/{team_id}/limits",
        data={
            "csrf": token,
            "rpm_limit": "30",
            "max_concurrent_tasks": "",
            "allowed_models": ["minimax-hailuo-2.3"],
        },
    )
    assert limits.status_code == 303
    row = (await client.get(f"/admin/teams/{team_id}", headers=ADMIN)).json()
    assert row["rpm_limit"] == 30 and row["allowed_models"] == ["minimax-hailuo-2.3"]
    refused = await client.post(
        "/v1/tasks", json=task_body(model="minimax-hailuo-2.3-fast"), headers=team.headers
    )
    assert refused.status_code == 403  # the allow-list applies to the next request
    trail = (await client.get("/admin/audit", params={"target": team_id}, headers=ADMIN)).json()
    actions = {(e["action"], e["actor"]) for e in trail["data"]}
    assert ("budgets.set", "Grace Hopper (console)") in actions
    assert ("team.update", "Grace Hopper (console)") in actions
    bad = await client.post(
        f"/console/teams/{team_id}/budgets", data={"csrf": token, "limit_day": "lots"}
    )
    assert bad.status_code == 400 and "limit_usd" in bad.text
    # "²" passes str.isdigit() and int() refuses it: a 400 naming the field, not a 500.
    odd = await client.post(
        f"/console/teams/{team_id}/limits", data={"csrf": token, "rpm_limit": "²"}
    )
    assert odd.status_code == 400 and "rpm_limit" in odd.text


async def test_an_admin_issues_a_key_once_and_revokes_it(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    team_id = team.team["id"]
    token = await admin_signed_in(client)
    issued = await client.post(
        f"/console/teams/{team_id}/keys", data={"csrf": token, "name": "ci-bot"}
    )
    assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
    key = re.search(r'id="issued-key" class="secret">(qgw_[^<]+)<', issued.text).group(1)  # type: ignore[union-attr]
    works = await client.get("/v1/tasks", headers={"Authorization": f"Bearer {key}"})
    assert works.status_code == 200
    listed = await client.get(f"/console/keys?team={team_id}")
    assert "ci-bot" in listed.text and key not in listed.text
    key_id = re.search(
        r'/console/keys/([0-9a-f-]+)/revoke"[^<]*<input[^>]*>\s*<input[^>]*>\s*<button[^>]*ci-bot',
        listed.text,
    )
    keys = (await client.get(f"/admin/teams/{team_id}/keys", headers=ADMIN)).json()["data"]
    bot = next(k for k in keys if k["name"] == "ci-bot")
    assert key_id is None or key_id.group(1) == bot["id"]
    revoked = await client.post(
        f"/console/keys/{bot['id']}/revoke", data={"csrf": token, "team": team_id}
    )
    assert revoked.status_code == 303
    refused = await client.get("/v1/tasks", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401


async def test_the_delivery_log_and_a_redelivery(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    task = await submit(client, team, callback_url="http://127.0.0.1:9/hook")
    await finish_as(db, task["task_id"], "failed")  # its terminal event, in the outbox
    event = await db.fetchrow("SELECT id FROM webhook_events WHERE task_id = $1", task["task_id"])
    assert event is not None
    await db.execute("UPDATE webhook_events SET status = 'failed' WHERE id = $1", event["id"])
    token = await signed_in(client, team.key)
    log = await client.get("/console/webhooks?status=failed")
    assert task["task_id"] in log.text
    page = await client.get(f"/console/tasks/{task['task_id']}")
    assert event["id"] in page.text
    again = await client.post(
        f"/console/tasks/{task['task_id']}/deliveries/{event['id']}/redeliver",
        data={"csrf": token},
    )
    assert again.status_code == 303
    status = await db.fetchval("SELECT status FROM webhook_events WHERE id = $1", event["id"])
    assert status == "pending"
    other = await make_team(client)
    async with second_client(client) as stranger:
        other_token = await signed_in(stranger, other.key)
        refused = await stranger.post(
            f"/console/tasks/{task['task_id']}/deliveries/{event['id']}/redeliver",
            data={"csrf": other_token},
        )
        assert refused.status_code == 404
        assert task["task_id"] not in (await stranger.get("/console/webhooks")).text


async def test_an_admin_rotates_a_teams_webhook_secret(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    before = team.team["webhook_secret"]
    token = await admin_signed_in(client)
    answer = await client.post(
        f"/console/teams/{team.team['id']}/webhook-secret/rotate", data={"csrf": token}
    )
    assert answer.status_code == 200
    after = (await client.get(f"/admin/teams/{team.team['id']}", headers=ADMIN)).json()
    assert after["webhook_secret"] != before and after["webhook_secret"] in answer.text


async def test_operations_at_a_glance(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    team = await make_team(client)
    await submit(client, team)
    await submit(client, team)
    await tasks_repository.pause_upstream(db, seconds=60, reason="balance_exhausted")
    await admin_signed_in(client, name="Ops Person")
    page = await client.get("/console/operations")
    assert page.status_code == 200
    assert "paused" in page.text and "Qingbo answered 402" in page.text
    assert re.search(
        rf">{re.escape(team.team['name'])}</a></td><td class=\"num\">2</td>", page.text
    )
    audit = await client.get("/console/operations", params={"action": "team.create"})
    assert team.team["id"] in audit.text
    assert (await client.get("/console/operations", params={"action": "nope"})).status_code == 400


async def test_the_task_page_shows_costs_and_cancels(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await signed_in(client, team.key)
    page = await client.get(f"/console/tasks/{task['task_id']}")
    assert f"${task['estimated_cost_usd']}" in page.text
    assert 'hx-trigger="every 2s"' in page.text  # live until it ends
    assert "Cancel the task" in page.text
    token = await csrf_of(client, f"/console/tasks/{task['task_id']}")
    await client.post(f"/console/tasks/{task['task_id']}/cancel", data={"csrf": token})
    live = await client.get(f"/console/tasks/{task['task_id']}/live")
    assert "cancelled" in live.text and "hx-trigger" not in live.text  # polling stops
    assert "Cancel the task" not in live.text
    listed = await client.get("/console/tasks", params={"status": "cancelled"})
    assert task["task_id"] in listed.text
    assert task["task_id"] not in (await client.get("/console/tasks?status=queued")).text
    # By model family, as the catalog in force names them (the filter offers every family).
    hailuo = await client.get("/console/tasks", params={"family": "hailuo"})
    assert task["task_id"] in hailuo.text and ">kling</option>" in hailuo.text
    assert task["task_id"] not in (await client.get("/console/tasks?family=kling")).text


async def test_an_admin_sets_the_company_budgets(client: httpx.AsyncClient) -> None:
    token = await admin_signed_in(client, name="Finance Lead")
    saved = await client.post(
        "/console/company/budgets", data={"csrf": token, "limit_month": "5000"}
    )
    assert saved.status_code == 303
    company = (await client.get("/admin/budgets", headers=ADMIN)).json()["budgets"]
    assert [(b["window"], b["limit_usd"]) for b in company] == [("month", "5000.00")]
    page = await client.get("/console/operations")
    assert 'id="company-month" name="limit_month" inputmode="decimal" value="5000.00"' in page.text
    trail = (await client.get("/admin/audit", params={"target": "company"}, headers=ADMIN)).json()
    assert trail["data"][0]["actor"] == "Finance Lead (console)"
    cleared = await client.post("/console/company/budgets", data={"csrf": token})
    assert cleared.status_code == 303
    assert (await client.get("/admin/budgets", headers=ADMIN)).json()["budgets"] == []
