"""An absurd charge is a dispute, not a blocked company (issue 31, point 4): budgets are
charged at most the reservation times QGW_CHARGE_CAP_FACTOR, what Qingbo reported is kept,
the excess is listed for admins, counted, and accepted or rejected (audited); the ledger
still balances and disputed money is shown apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from service.budgets.service import verify_ledger
from service.platform.money import MICROS_PER_QUOTA, format_usd, parse_usd
from service.tasks.resources import Resources
from tests.factories import (
    ADMIN,
    TeamKey,
    drive_to_end,
    invoke_cli,
    make_team,
    metric,
    row,
    submit,
)


async def team_with_budget(client: httpx.AsyncClient, limit: str = "5.00") -> TeamKey:
    team = await make_team(client)
    answer = await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "total", "limit_usd": limit}]},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    return team


async def spent(client: httpx.AsyncClient, team: TeamKey) -> int:
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    (budget,) = [b for b in usage["budgets"] if b["scope"] == "team"]
    assert parse_usd(budget["reserved_usd"]) == 0
    return parse_usd(budget["spent_usd"])


async def charged_beyond_cap(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    team: TeamKey,
    cost: Callable[[int], Any],
) -> dict[str, Any]:
    """A task Qingbo says cost `cost(price in quota)` quota, driven to its end; its open
    dispute (the price is the catalog's, whatever it is today)."""
    task = await submit(client, team)
    price_quota = (await row(db, task["task_id"]))["cost_micros"] // MICROS_PER_QUOTA
    await sim.put("/_sim/config", json={"terminal_patch": {"cost": cost(price_quota)}})
    assert await drive_to_end(res, db, task["task_id"]) == "completed"
    listed = (await client.get("/admin/disputes?status=open", headers=ADMIN)).json()
    (dispute,) = [d for d in listed["disputes"] if d["task_id"] == task["task_id"]]
    return dispute


async def test_an_absurd_charge_settles_at_the_cap_and_is_disputed(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await team_with_budget(client)
    disputes = metric(
        "qgw_charge_disputes_total",
        team=team.team["name"],
        model="minimax-hailuo-2.3",
        family="hailuo",
    )
    dispute = await charged_beyond_cap(client, res, db, sim, team, lambda _: 5e14)  # ~1e9 USD

    stored = await row(db, dispute["task_id"])
    price = stored["cost_micros"]
    assert stored["status"] == "completed" and stored["charged_micros"] == 2 * price
    assert stored["upstream_cost_quota"] == 5 * 10**14  # what Qingbo reported is kept
    reported = 5 * 10**14 * MICROS_PER_QUOTA
    assert dispute["status"] == "open" and dispute["team_id"] == team.team["id"]
    assert dispute["reserved_usd"] == format_usd(price)
    assert dispute["charged_usd"] == format_usd(2 * price)
    assert dispute["reported_usd"] == format_usd(reported)
    assert dispute["disputed_usd"] == format_usd(reported - 2 * price)
    assert (
        metric(
            "qgw_charge_disputes_total",
            team=team.team["name"],
            model="minimax-hailuo-2.3",
            family="hailuo",
        )
        == disputes + 1
    )
    # The team is charged the cap, not a billion dollars: it can still spend.
    assert await spent(client, team) == 2 * price
    await submit(client, team)

    report = await verify_ledger(db)
    assert report.ok, report
    assert report.open_disputes == 1 and report.disputed_micros == reported - 2 * price
    # The operator's command shows the disputed money apart and still passes.
    env = {"QGW_DATABASE_URL": res.settings.database_url, "QGW_LOG_LEVEL": "WARNING"}
    ran = await invoke_cli(["admin", "verify-ledger"], env)
    assert ran.returncode == 0, ran.stdout
    assert f"disputed_usd: {format_usd(reported - 2 * price)} in 1 open" in ran.stdout
    spend = await client.get(
        "/admin/usage/report", params={"team_id": team.team["id"]}, headers=ADMIN
    )
    assert spend.status_code == 200, spend.text
    assert spend.json()["total"]["disputed_usd"] == format_usd(reported - 2 * price)
    assert spend.json()["total"]["spent_usd"] == format_usd(2 * price)
    # Qingbo's ~4.6e18 overflowed bigint: held at 1e15 quota, still a dispute, still ends.
    huge = await charged_beyond_cap(client, res, db, sim, team, lambda _: 5e18)
    assert huge["reported_usd"] == format_usd(10**15 * MICROS_PER_QUOTA)
    assert (await verify_ledger(db)).ok


async def test_accept_charges_the_excess_and_reject_leaves_the_cap_both_audited(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await team_with_budget(client)

    def thrice(price_quota: int) -> int:  # the cap is twice: a third price disputed
        return 3 * price_quota

    accepted = await charged_beyond_cap(client, res, db, sim, team, thrice)
    rejected = await charged_beyond_cap(client, res, db, sim, team, thrice)
    price = parse_usd(accepted["reserved_usd"])
    assert await spent(client, team) == 4 * price

    done = await client.post(
        f"/admin/disputes/{rejected['id']}/reject", headers={**ADMIN, "X-Actor": "finance"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "rejected" and done.json()["resolved_at"]
    assert await spent(client, team) == 4 * price  # the capped charge stands
    again = await client.post(f"/admin/disputes/{rejected['id']}/accept", headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"]["code"] == "dispute_resolved"

    taken = await client.post(f"/admin/disputes/{accepted['id']}/accept", headers=ADMIN)
    assert taken.status_code == 200, taken.text
    assert taken.json()["status"] == "accepted"
    assert await spent(client, team) == 5 * price  # the excess joined every budget
    assert (await row(db, accepted["task_id"]))["charged_micros"] == 3 * price
    report = await verify_ledger(db)
    assert report.ok, report
    assert report.open_disputes == 0 and report.disputed_micros == 0
    spend = (
        await client.get("/admin/usage/report", params={"team_id": team.team["id"]}, headers=ADMIN)
    ).json()
    assert spend["total"]["spent_usd"] == format_usd(5 * price)
    assert spend["total"]["disputed_usd"] == format_usd(0)

    trail = (await client.get("/admin/audit", headers=ADMIN)).json()["data"]
    entries = {e["action"]: e for e in trail if e["target_type"] == "dispute"}
    assert entries["dispute.reject"]["actor"] == "finance"
    assert entries["dispute.reject"]["target_id"] == str(rejected["id"])
    assert entries["dispute.reject"]["before"]["status"] == "open"
    assert entries["dispute.reject"]["after"]["status"] == "rejected"
    assert entries["dispute.accept"]["after"]["disputed_usd"] == format_usd(price)
    assert entries["dispute.accept"]["after"]["status"] == "accepted"
    listed = (await client.get("/admin/disputes?status=open", headers=ADMIN)).json()
    assert listed["disputes"] == []
    missing = await client.post("/admin/disputes/999999999/accept", headers=ADMIN)
    assert missing.status_code == 404
    bad = await client.get("/admin/disputes?status=maybe", headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


async def test_a_dispute_id_beyond_a_bigint_is_a_400_and_an_unknown_one_a_404(
    client: httpx.AsyncClient,
) -> None:
    """Schemathesis found these answering 500: the id went to Postgres as a bigint."""
    for action in ("accept", "reject"):
        huge = await client.post(f"/admin/disputes/{2**70}/{action}", headers=ADMIN)
        assert huge.status_code == 400, huge.text
        assert huge.json()["error"]["param"] == "dispute_id"
        unknown = await client.post(f"/admin/disputes/{2**63 - 1}/{action}", headers=ADMIN)
        assert unknown.status_code == 404, unknown.text
