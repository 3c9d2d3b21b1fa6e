"""Against the current upstream generation, with real worker processes: the ambiguous
submission closed by the upstream Idempotency-Key (a read timeout, a worker killed inside
the call), progress visible while processing, and settlement at what Qingbo charged."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from service.budgets.service import verify_ledger
from service.tasks.resources import Resources
from tests.factories import (
    ADMIN,
    TeamKey,
    drive_to_end,
    make_team,
    metric,
    task_body,
    wait_for,
    wait_terminal,
)

pytestmark = pytest.mark.usefixtures("api_server")
CURRENT = "2026-09"


async def sim_tasks(sim: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await sim.get("/_sim/tasks")).json()["tasks"])


async def admit(client_for: Any, team: TeamKey, **body: Any) -> dict[str, Any]:
    async with client_for(CURRENT) as http:
        answer = await http.post("/v1/tasks", json=task_body(**body), headers=team.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def set_month_budget(client: httpx.AsyncClient, team: TeamKey, usd: str) -> None:
    answer = await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": usd}]},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text


async def assert_charged_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, sim: httpx.AsyncClient, team: TeamKey
) -> dict[str, Any]:
    [upstream] = await sim_tasks(sim)  # one task at Qingbo, however often it was sent
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert usage["budgets"][0]["spent_usd"] == "0.3294"  # once, not twice (per clip)
    assert usage["budgets"][0]["reserved_usd"] == "0.00"
    report = await verify_ledger(db)
    assert report.ok, report
    return upstream


async def test_a_read_timeout_is_resolved_by_sending_again_with_the_same_key(
    client: httpx.AsyncClient,
    client_for: Any,
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
    start_worker: Any,
) -> None:
    # Qingbo creates the task, then answers after the gateway's 2 s read timeout.
    await sim.put("/_sim/config", json={"api_version": CURRENT, "latency_ms": 2500})
    team = await make_team(client)
    await set_month_budget(client, team, "5.00")
    start_worker(qingbo_api_version=CURRENT)
    task = await admit(client_for, team)

    async def received() -> list[dict[str, Any]]:
        return await sim_tasks(sim)

    await wait_for(received, timeout=10)
    await sim.put("/_sim/config", json={"latency_ms": 0})  # the next attempt gets an answer
    done = await wait_terminal(client, team, task["task_id"], timeout=30)
    assert done["status"] == "completed", done
    upstream = await assert_charged_once(client, db, sim, team)
    assert upstream["submissions"] >= 2
    assert upstream["idempotency_key"] == f"qgw-{task['task_id']}"
    assert done["upstream_task_id"] == upstream["task_id"]


async def test_a_worker_killed_inside_the_submit_call_costs_one_task(
    client: httpx.AsyncClient,
    client_for: Any,
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
    start_worker: Any,
) -> None:
    await sim.put("/_sim/config", json={"api_version": CURRENT, "latency_ms": 60_000})
    team = await make_team(client)
    await set_month_budget(client, team, "5.00")
    first = start_worker(qingbo_api_version=CURRENT, upstream_timeout_seconds=120)
    task = await admit(client_for, team)

    async def inside_the_call() -> bool:
        state = await db.fetchval("SELECT dispatch_state FROM tasks WHERE id = $1", task["task_id"])
        return state == "submitting" and bool(await sim_tasks(sim))

    await wait_for(inside_the_call, timeout=10)
    first.kill()  # SIGKILL mid-call: the answer is never read
    await sim.put("/_sim/config", json={"latency_ms": 0})
    start_worker(qingbo_api_version=CURRENT)  # its reconciler takes the stale submission back
    done = await wait_terminal(client, team, task["task_id"], timeout=45)
    assert done["status"] == "completed", done
    upstream = await assert_charged_once(client, db, sim, team)
    assert upstream["submissions"] >= 2


async def test_progress_is_visible_while_processing(
    client: httpx.AsyncClient, client_for: Any, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    await sim.put(
        "/_sim/config",
        json={"api_version": CURRENT, "queue_seconds": 0.2, "processing_seconds": 4},
    )
    team = await make_team(client, api_version=CURRENT)
    start_worker(qingbo_api_version=CURRENT)
    task = await admit(client_for, team)

    async def moving() -> dict[str, Any] | None:
        read = await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)
        body = read.json()
        moved = body["status"] == "processing" and body["progress"] not in ("", "0%")
        return body if moved else None

    seen = await wait_for(moving, timeout=15)
    assert seen["progress"].endswith("%") and 0 < int(seen["progress"][:-1]) < 100
    april = await client.get(
        f"/v1/tasks/{task['task_id']}", headers={**team.headers, "Qingbo-Version": "2026-04"}
    )
    assert isinstance(april.json()["progress"], int) and april.json()["progress"] > 0


@pytest.mark.parametrize(
    ("bill_factor", "charged", "direction"), [(1.5, 494_100, "over"), (0.5, 164_700, "under")]
)
async def test_the_budget_settles_at_what_qingbo_charged(
    client: httpx.AsyncClient,
    apps_by_generation: dict[str, Any],
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
    bill_factor: float,
    charged: int,
    direction: str,
) -> None:
    res: Resources = apps_by_generation[CURRENT].state.resources
    await sim.put("/_sim/config", json={"api_version": CURRENT, "bill_factor": bill_factor})
    team = await make_team(client)
    await set_month_budget(client, team, "5.00")
    before = metric(
        "qgw_upstream_cost_drift_usd_total",
        model="minimax-hailuo-2.3",
        family="hailuo",
        direction=direction,
    )
    async with client_for_app(apps_by_generation) as http:
        task = (await http.post("/v1/tasks", json=task_body(), headers=team.headers)).json()
    assert await drive_to_end(res, db, task["task_id"]) == "completed"

    done = (await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)).json()
    charged_usd = f"{charged / 1_000_000:.6f}".rstrip("0")
    assert done["cost_usd"] == charged_usd and done["estimated_cost_usd"] == "0.3294"
    row = await db.fetchrow(
        "SELECT charged_micros, upstream_cost_quota, upstream_pre_consumed_quota FROM tasks "
        "WHERE id = $1",
        task["task_id"],
    )
    assert row["charged_micros"] == charged and row["upstream_cost_quota"] == charged // 2
    assert row["upstream_pre_consumed_quota"] == round(164_700 * bill_factor)
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert usage["budgets"][0]["spent_usd"] == charged_usd
    assert (await verify_ledger(db)).ok
    drift = abs(charged - 329_400) / 1_000_000  # 768p 6 s per clip: 0.3294
    after = metric(
        "qgw_upstream_cost_drift_usd_total",
        model="minimax-hailuo-2.3",
        family="hailuo",
        direction=direction,
    )
    assert after == pytest.approx(before + drift)


def client_for_app(apps: dict[str, Any]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[CURRENT]), base_url="http://gw")


async def test_an_overcharge_closes_the_cap_for_what_comes_next(
    client: httpx.AsyncClient,
    apps_by_generation: dict[str, Any],
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> None:
    # The cap fits two tasks at the estimate; Qingbo charges 1.5x for the first.
    res: Resources = apps_by_generation[CURRENT].state.resources
    await sim.put("/_sim/config", json={"api_version": CURRENT, "bill_factor": 1.5})
    team = await make_team(client)
    await set_month_budget(client, team, "0.6588")
    async with client_for_app(apps_by_generation) as http:
        first = (await http.post("/v1/tasks", json=task_body(), headers=team.headers)).json()
        assert await drive_to_end(res, db, first["task_id"]) == "completed"
        # 0.4941 spent of 0.6588: a second task at 0.3294 no longer fits.
        refused = await http.post("/v1/tasks", json=task_body(), headers=team.headers)
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["budget"]["spent_usd"] == "0.4941"
        # 0.1647 is left: the fast model's 0.171 does not fit either.
        fast = await http.post(
            "/v1/tasks", json=task_body(model="minimax-hailuo-2.3-fast"), headers=team.headers
        )
        assert fast.status_code == 402
    assert (await verify_ledger(db)).ok
