"""Budgets on real Postgres: admission reserves exactly, settlement moves money exactly once,
windows roll over on the (injected) clock, and the ledger proves every figure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from service.budgets.service import verify_ledger
from service.platform.money import format_usd, parse_usd
from service.tasks.resources import Resources
from tests import prices
from tests.factories import ADMIN, TeamKey, drive_to_end, make_team, submit, task_body

MODEL = "minimax-hailuo-2.3"


@pytest.fixture
def price(res: Resources) -> int:
    return parse_usd(prices.usd())  # the generation's price of task_body()


@pytest.fixture
def clock(res: Resources) -> Iterator[list[datetime]]:
    """Budget time, moved by the test: clock[0] is "now"."""
    now = [datetime(2026, 3, 31, 23, 0, tzinfo=UTC)]
    original = res.clock
    res.clock = lambda: now[0]
    yield now
    res.clock = original


async def put_budgets(client: httpx.AsyncClient, path: str, **windows: int) -> httpx.Response:
    body = {"budgets": [{"window": w, "limit_usd": format_usd(m)} for w, m in windows.items()]}
    return await client.put(f"/admin{path}", json=body, headers=ADMIN)


async def try_submit(client: httpx.AsyncClient, team: TeamKey, **body: Any) -> httpx.Response:
    return await client.post("/v1/tasks", json=task_body(**body), headers=team.headers)


async def usage(client: httpx.AsyncClient, team: TeamKey) -> list[dict[str, Any]]:
    answer = await client.get("/v1/usage", headers=team.headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["budgets"])


async def assert_ledger_balances(db: asyncpg.Connection) -> None:
    report = await verify_ledger(db)
    assert report.ok, report


async def test_admin_sets_reads_and_removes_budgets_at_three_scopes(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    team_id = team.team["id"]
    key_id = (await client.post(f"/admin/teams/{team_id}/keys", json={}, headers=ADMIN)).json()[
        "id"
    ]
    company = await put_budgets(client, "/budgets", month=1_000_000_000)
    assert company.status_code == 200, company.text
    assert company.json()["budgets"][0] | {"by_model": []} == company.json()["budgets"][0]
    assert company.json()["budgets"][0]["limit_usd"] == "1000.00"

    answer = await put_budgets(
        client, f"/teams/{team_id}/budgets", day=25_000_000, total=90_000_000
    )
    assert answer.status_code == 200, answer.text
    assert [(b["window"], b["limit_usd"]) for b in answer.json()["budgets"]] == [
        ("day", "25.00"),
        ("total", "90.00"),
    ]
    day = answer.json()["budgets"][0]
    assert day["spent_usd"] == day["reserved_usd"] == "0.00" and day["remaining_usd"] == "25.00"
    assert day["resets_at"] is not None and day["starts_at"] is not None
    assert answer.json()["budgets"][1]["resets_at"] is None  # 'total' never resets

    key = await put_budgets(client, f"/keys/{key_id}/budgets", week=5_000_000)
    assert key.status_code == 200 and key.json()["budgets"][0]["key_id"] == key_id

    # PUT is the complete set: 'total' goes away.
    again = await put_budgets(client, f"/teams/{team_id}/budgets", day=30_000_000)
    assert [b["window"] for b in again.json()["budgets"]] == ["day"]
    read = await client.get(f"/admin/teams/{team_id}/budgets", headers=ADMIN)
    assert [b["limit_usd"] for b in read.json()["budgets"]] == ["30.00"]

    own = await usage(client, team)
    assert [(b["scope"], b["window"]) for b in own] == [
        ("company", "month"),
        ("team", "day"),
        ("key", "week"),
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"budgets": [{"window": "year", "limit_usd": "1"}]}, "budgets[0].window"),
        ({"budgets": [{"window": "day", "limit_usd": "-1"}]}, "budgets[0].limit_usd"),
        ({"budgets": [{"window": "day", "limit_usd": "0.0000001"}]}, "budgets[0].limit_usd"),
        ({"budgets": [{"window": "day", "limit_usd": 5}]}, "budgets[0].limit_usd"),
        (
            {"budgets": [{"window": "day", "limit_usd": "1"}, {"window": "day", "limit_usd": "2"}]},
            "budgets[1].window",
        ),
    ],
)
async def test_bad_budget_bodies_are_400_and_change_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: dict[str, Any], param: str
) -> None:
    team = await make_team(client)
    answer = await client.put(f"/admin/teams/{team.team['id']}/budgets", json=body, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert await db.fetchval("SELECT count(*) FROM budgets") == 0


async def test_unknown_team_or_key_is_404(client: httpx.AsyncClient) -> None:
    missing = "00000000-0000-0000-0000-000000000001"
    assert (await put_budgets(client, f"/teams/{missing}/budgets", day=1)).status_code == 404
    assert (await put_budgets(client, f"/keys/{missing}/budgets", day=1)).status_code == 404
    assert (await client.get(f"/admin/teams/{missing}/usage", headers=ADMIN)).status_code == 404


async def test_admission_stops_exactly_at_the_limit_and_names_the_budget(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    team = await make_team(client)
    limit = 3 * price + price - 1  # room for three, one micro-dollar short of four
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", month=limit)
    for _ in range(3):
        assert (await try_submit(client, team)).status_code == 200
    refused = await try_submit(client, team)
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["budget"] == {
        "scope": "team",
        "window": "month",
        "limit_usd": format_usd(limit),
        "spent_usd": "0.00",
        "reserved_usd": format_usd(3 * price),
        "resets_at": error["budget"]["resets_at"],
    }
    assert error["budget"]["resets_at"].endswith("Z")
    assert "team month budget exceeded" in error["message"]
    # Stores nothing: three tasks, three reservations.
    assert await db.fetchval("SELECT count(*) FROM tasks") == 3
    assert await db.fetchval("SELECT count(*) FROM budget_ledger") == 3
    (standing,) = await usage(client, team)
    assert standing["reserved_usd"] == format_usd(3 * price)
    assert standing["remaining_usd"] == format_usd(price - 1)
    assert standing["by_model"] == [
        {"model": MODEL, "spent_usd": "0.00", "reserved_usd": format_usd(3 * price)}
    ]
    await assert_ledger_balances(db)


async def test_key_budget_inside_team_budget_inside_company_budget(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    team = await make_team(client)
    second_key = await client.post(f"/admin/teams/{team.team['id']}/keys", json={}, headers=ADMIN)
    sibling = TeamKey(team=team.team, key=second_key.json()["key"])
    other = await make_team(client)
    first_key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE team_id = $1 ORDER BY created_at LIMIT 1",
        team.team["id"],
    )
    await put_budgets(client, "/budgets", day=5 * price)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=3 * price)
    await put_budgets(client, f"/keys/{first_key_id}/budgets", total=1 * price)

    assert (await try_submit(client, team)).status_code == 200
    assert (await try_submit(client, team)).json()["error"]["budget"]["scope"] == "key"
    assert (await try_submit(client, sibling)).status_code == 200
    assert (await try_submit(client, sibling)).status_code == 200
    assert (await try_submit(client, sibling)).json()["error"]["budget"]["scope"] == "team"
    assert (await try_submit(client, other)).status_code == 200
    assert (await try_submit(client, other)).status_code == 200
    assert (await try_submit(client, other)).json()["error"]["budget"]["scope"] == "company"
    await assert_ledger_balances(db)


async def test_every_window_is_checked(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    team = await make_team(client)
    await put_budgets(
        client,
        f"/teams/{team.team['id']}/budgets",
        day=10 * price,
        week=2 * price,
        month=50 * price,
    )
    assert (await try_submit(client, team)).status_code == 200
    assert (await try_submit(client, team)).status_code == 200
    refused = await try_submit(client, team)
    assert refused.status_code == 402 and refused.json()["error"]["budget"]["window"] == "week"
    reserved = {b["window"]: b["reserved_usd"] for b in await usage(client, team)}
    assert reserved == {w: format_usd(2 * price) for w in ("day", "week", "month")}


async def test_windows_roll_over_and_settle_where_reserved(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    price: int,
    clock: list[datetime],
) -> None:
    team = await make_team(client)
    await put_budgets(
        client, f"/teams/{team.team['id']}/budgets", day=price, month=price * 3, total=price * 10
    )
    first = await submit(client, team)  # 2026-03-31 23:00 UTC
    assert (await try_submit(client, team)).json()["error"]["budget"]["window"] == "day"

    clock[0] += timedelta(hours=1)  # April 1st: new day and new month, same 'total'
    standing = {b["window"]: b for b in await usage(client, team)}
    assert standing["day"]["reserved_usd"] == standing["month"]["reserved_usd"] == "0.00"
    assert standing["total"]["reserved_usd"] == format_usd(price)
    assert standing["day"]["starts_at"] == "2026-04-01T00:00:00Z"
    assert standing["day"]["resets_at"] == "2026-04-02T00:00:00Z"
    assert standing["month"]["resets_at"] == "2026-05-01T00:00:00Z"
    second = await submit(client, team)

    # The March task completes in April: its money is spent in March's windows.
    assert await drive_to_end(res, db, first["task_id"]) == "completed"
    standing = {b["window"]: b for b in await usage(client, team)}
    assert standing["day"]["spent_usd"] == "0.00"
    assert standing["day"]["reserved_usd"] == format_usd(price)
    assert standing["total"]["spent_usd"] == format_usd(price)
    march = await db.fetch(
        "SELECT sum(p.spent_micros) AS spent_micros, sum(p.reserved_micros) AS reserved_micros "
        "FROM budget_shards p JOIN budgets b ON b.id = p.budget_id "
        "WHERE b.period = 'day' AND p.starts_at = $1 GROUP BY b.id",
        datetime(2026, 3, 31, tzinfo=UTC),
    )
    assert [(r["spent_micros"], r["reserved_micros"]) for r in march] == [(price, 0)]
    assert second["status"] == "queued"
    await assert_ledger_balances(db)


async def test_windows_follow_the_configured_time_zone(
    client: httpx.AsyncClient, res: Resources, price: int, clock: list[datetime]
) -> None:
    team = await make_team(client)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", week=price)
    original = res.settings
    res.settings = original.model_copy(update={"budget_timezone": "Asia/Shanghai"})
    try:
        clock[0] = datetime(2026, 11, 22, 16, 30, tzinfo=UTC)  # Monday 00:30 in Shanghai
        (week,) = await usage(client, team)
        assert week["starts_at"] == "2026-11-22T16:00:00Z"
        assert week["resets_at"] == "2026-11-29T16:00:00Z"
    finally:
        res.settings = original


async def test_failed_cancelled_and_rejected_tasks_release_completed_ones_spend(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    price: int,
) -> None:
    team = await make_team(client)
    await put_budgets(client, "/budgets", total=100 * price)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=10 * price)
    charged_before = REGISTRY.get_sample_value(
        "qgw_cost_charged_usd_total",
        {"team": team.team["name"], "model": MODEL, "family": "hailuo"},
    )

    ok = await submit(client, team)
    assert await drive_to_end(res, db, ok["task_id"]) == "completed"
    await sim.put("/_sim/config", json={"fail_rate": 1.0})
    failed = await submit(client, team)
    assert await drive_to_end(res, db, failed["task_id"]) == "failed"
    await sim.put("/_sim/config", json={"fail_rate": 0.0, "submit_status": 400})
    rejected = await submit(client, team)
    assert await drive_to_end(res, db, rejected["task_id"]) == "failed"
    cancelled = await submit(client, team)
    answer = await client.post(f"/v1/tasks/{cancelled['task_id']}/cancel", headers=team.headers)
    assert answer.json()["status"] == "cancelled"

    for budget in await usage(client, team):
        assert (budget["spent_usd"], budget["reserved_usd"]) == (format_usd(price), "0.00")
    kinds = await db.fetch(
        "SELECT task_id, kind, count(*) AS n FROM budget_ledger GROUP BY task_id, kind"
    )
    by_task = {(r["task_id"], r["kind"]): r["n"] for r in kinds}
    assert by_task[(ok["task_id"], "settle")] == 2  # company and team, once each
    for task in (failed, rejected, cancelled):
        assert by_task[(task["task_id"], "release")] == 2
        assert (task["task_id"], "settle") not in by_task
    charged = REGISTRY.get_sample_value(
        "qgw_cost_charged_usd_total",
        {"team": team.team["name"], "model": MODEL, "family": "hailuo"},
    )
    assert round((charged or 0) - (charged_before or 0), 6) == price / 1_000_000
    await assert_ledger_balances(db)


async def test_concurrency_limit_counts_queued_and_processing_tasks(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    team = await make_team(client, max_concurrent_tasks=2)
    first = await submit(client, team)
    await submit(client, team)
    refused = await try_submit(client, team)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "concurrency_limited"
    assert refused.headers["Retry-After"].isdigit()
    assert await db.fetchval("SELECT count(*) FROM tasks") == 2
    await client.post(f"/v1/tasks/{first['task_id']}/cancel", headers=team.headers)
    assert (await try_submit(client, team)).status_code == 200
    answer = await client.get("/v1/usage", headers=team.headers)
    assert answer.json()["active_tasks"] == 2 and answer.json()["max_concurrent_tasks"] == 2
    await assert_ledger_balances(db)


async def test_a_budget_refusal_does_not_take_a_concurrency_slot(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    team = await make_team(client, max_concurrent_tasks=5)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=price)
    assert (await try_submit(client, team)).status_code == 200
    for _ in range(3):
        assert (await try_submit(client, team)).status_code == 402
    assert (await client.get("/v1/usage", headers=team.headers)).json()["active_tasks"] == 1


async def test_threshold_crossings_are_announced_once_per_window(
    client: httpx.AsyncClient, price: int, clock: list[datetime]
) -> None:
    team = await make_team(client)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=4 * price)

    def crossings(percent: str) -> float:
        labels = {"team": team.team["name"], "scope": "team", "window": "day", "percent": percent}
        return REGISTRY.get_sample_value("qgw_budget_threshold_crossings_total", labels) or 0.0

    await submit(client, team)  # 25 %
    assert (crossings("50"), crossings("80"), crossings("100")) == (0, 0, 0)
    await submit(client, team)  # 50 %
    assert (crossings("50"), crossings("80")) == (1, 0)
    await submit(client, team)  # 75 %
    assert crossings("50") == 1
    await submit(client, team)  # 100 %: both 80 and 100 were passed; the highest is announced
    assert (crossings("50"), crossings("80"), crossings("100")) == (1, 0, 1)
    assert (await try_submit(client, team)).status_code == 402
    assert crossings("100") == 1
    clock[0] += timedelta(days=1)
    await submit(client, team)
    await submit(client, team)  # 50 % of the new day
    assert crossings("50") == 2


async def test_a_changed_limit_re_arms_its_alert_levels(
    client: httpx.AsyncClient, price: int
) -> None:
    team = await make_team(client)
    path = f"/teams/{team.team['id']}/budgets"
    await put_budgets(client, path, day=4 * price)

    def crossings(percent: str) -> float:
        labels = {"team": team.team["name"], "scope": "team", "window": "day", "percent": percent}
        return REGISTRY.get_sample_value("qgw_budget_threshold_crossings_total", labels) or 0.0

    await submit(client, team)
    await submit(client, team)  # 50 % of 4
    assert crossings("50") == 1
    await put_budgets(client, path, day=4 * price)  # the same limit: nothing re-armed
    await submit(client, team)  # 75 %
    assert crossings("50") == 1
    await put_budgets(client, path, day=12 * price)  # raised: 3 of 12 is 25 %
    await submit(client, team)
    await submit(client, team)
    assert crossings("50") == 1  # 5 of 12
    await submit(client, team)  # 6 of 12: 50 % of the new limit is announced again
    assert crossings("50") == 2
    await put_budgets(client, path, day=7 * price)  # lowered: 6 of 7 is 86 %
    await submit(client, team)  # 7 of 7: the highest level against the new limit
    assert crossings("100") == 1


async def test_estimate_prices_and_checks_without_reserving(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    team = await make_team(client)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=price)
    answer = await client.post("/v1/tasks/estimate", json=task_body(), headers=team.headers)
    assert answer.status_code == 200, answer.text
    estimate = answer.json()
    assert estimate["cost_usd"] == format_usd(price) and estimate["fits"] is True
    assert estimate["resolution"] == "768p" and estimate["duration"] == 6
    assert estimate["budgets"][0]["fits"] is True
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    await submit(client, team)
    estimate = (
        await client.post("/v1/tasks/estimate", json=task_body(), headers=team.headers)
    ).json()
    assert estimate["fits"] is False and estimate["budgets"][0]["remaining_usd"] == "0.00"
    bad = await client.post("/v1/tasks/estimate", json=task_body(duration=7), headers=team.headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "duration"


async def test_admin_usage_matches_the_teams_own_view(
    client: httpx.AsyncClient, price: int
) -> None:
    team = await make_team(client)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", month=5 * price)
    await submit(client, team)
    await submit(client, team, model="minimax-hailuo-2.3-fast")
    admin = await client.get(f"/admin/teams/{team.team['id']}/usage", headers=ADMIN)
    assert admin.status_code == 200
    assert admin.json()["budgets"] == await usage(client, team)
    models = [m["model"] for m in admin.json()["budgets"][0]["by_model"]]
    assert models == [MODEL, "minimax-hailuo-2.3-fast"]


async def test_concurrent_admissions_in_one_process_never_overshoot(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    teams = [await make_team(client) for _ in range(3)]
    await put_budgets(client, "/budgets", day=20 * price)
    for team in teams:
        await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=8 * price)
    answers = await asyncio.gather(*(try_submit(client, teams[i % 3]) for i in range(60)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 20 and codes.count(402) == 40
    assert await db.fetchval(
        "SELECT sum(reserved_micros) FROM budget_shards p "
        "JOIN budgets b ON b.id = p.budget_id WHERE b.scope = 'company'"
    ) == (20 * price)
    await assert_ledger_balances(db)


def exclusive_admissions() -> float:
    return REGISTRY.get_sample_value("qgw_budget_exclusive_admissions_total") or 0.0


async def test_admissions_spread_over_shards_and_lock_whole_windows_only_when_needed(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    team = await make_team(client)
    await put_budgets(client, f"/teams/{team.team['id']}/budgets", day=1000 * price)
    before = exclusive_admissions()
    for _ in range(40):
        await submit(client, team)
    # Only the window's first admission (it creates the shards) locked the whole window;
    # the other 39 each took one shard: room for 499 prices (short of the 50 % alert)
    # was shared out in sixteenths, and 39 cannot empty a sixteenth (31 prices).
    assert exclusive_admissions() - before == 1
    shards = await db.fetch(
        "SELECT shard, reserved_micros, allowance_micros, limit_micros FROM budget_shards"
    )
    assert len(shards) == 16 and sum(s["reserved_micros"] for s in shards) == 40 * price
    assert sum(1 for s in shards if s["reserved_micros"]) > 1
    assert sum(s["allowance_micros"] for s in shards) == 500 * price - 1
    assert {s["limit_micros"] for s in shards} == {1000 * price}
    await assert_ledger_balances(db)


async def test_a_changed_limit_applies_to_the_next_admission(
    client: httpx.AsyncClient, db: asyncpg.Connection, price: int
) -> None:
    """Shards hold allowances made for the old limit; the new one still applies at once."""
    team = await make_team(client)
    path = f"/teams/{team.team['id']}/budgets"
    await put_budgets(client, path, day=100 * price)
    await submit(client, team)
    await put_budgets(client, path, day=2 * price)  # lowered below the shared-out room
    assert (await try_submit(client, team)).status_code == 200
    refused = await try_submit(client, team)
    assert refused.status_code == 402
    assert refused.json()["error"]["budget"]["limit_usd"] == format_usd(2 * price)
    await put_budgets(client, path, day=3 * price)  # raised
    assert [(await try_submit(client, team)).status_code for _ in range(2)] == [200, 402]
    allowances = await db.fetch("SELECT allowance_micros, limit_micros FROM budget_shards")
    assert {a["limit_micros"] for a in allowances} == {3 * price}
    assert sum(a["allowance_micros"] for a in allowances) == 3 * price
    await assert_ledger_balances(db)
