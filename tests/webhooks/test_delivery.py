"""Webhook delivery on the real stack: worker processes, the simulator, Postgres, Redis and
real HTTP receivers on loopback. Signatures are checked with the public `standardwebhooks`
package, exactly as an app would."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.config import Settings
from service.platform.money import parse_usd
from service.tasks.resources import Resources
from service.webhooks import jobs
from service.webhooks.delivery import WebhookSender
from tests import prices
from tests.factories import ADMIN, TeamKey, make_team, submit, wait_for, wait_terminal
from tests.webhooks.receiver import Receiver, running_receiver

pytestmark = pytest.mark.usefixtures("api_server")


def verify(team: TeamKey, received: Any, secret: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret or team.team["webhook_secret"]).verify(
        received.body, received.headers
    )
    return payload


async def deliveries(client: httpx.AsyncClient, team: TeamKey, task_id: str) -> list[Any]:
    answer = await client.get(f"/v1/tasks/{task_id}/deliveries", headers=team.headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


async def test_terminal_event_is_signed_and_carries_the_task(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client)
    start_worker()
    with running_receiver() as receiver:
        task = await submit(client, team, callback_url=receiver.url)
        done = await wait_terminal(client, team, task["task_id"])
        await wait_for(lambda: _count(receiver, 1))
        (got,) = receiver.received
        payload = verify(team, got)
        assert payload["event"] == "completed"
        assert {k: v for k, v in payload.items() if k != "event"} == done
        assert got.headers["webhook-id"].startswith("msg_")
        with pytest.raises(WebhookVerificationError):  # another team's secret does not verify
            Webhook((await make_team(client)).team["webhook_secret"]).verify(got.body, got.headers)
    (log,) = await deliveries(client, team, task["task_id"])
    assert log["status"] == "delivered" and log["attempts"] == 1
    (attempt,) = log["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["response_headers"]["content-type"] == (
        "text/plain"
    )
    assert "response_excerpt" not in attempt  # the receiver's body is the admin's to read
    admin = await client.get(f"/admin/tasks/{task['task_id']}/deliveries", headers=ADMIN)
    assert admin.json()["data"][0]["attempt_log"][0]["response_excerpt"] == "answer 200"


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) >= n


async def test_a_receiver_failing_three_times_gets_the_same_event_on_the_fourth(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client)
    start_worker()
    with running_receiver(script=[500, 503, 429]) as receiver:
        task = await submit(client, team, callback_url=receiver.url)
        await wait_for(lambda: _count(receiver, 4), timeout=30)
        assert [r.answered for r in receiver.received] == [500, 503, 429, 200]
        assert len(set(receiver.ids())) == 1  # one webhook-id on every attempt
        for got in receiver.received:
            assert verify(team, got)["event"] == "completed"
    (log,) = await deliveries(client, team, task["task_id"])
    assert log["status"] == "delivered" and log["attempts"] == 4
    assert [a["status_code"] for a in log["attempt_log"]] == [500, 503, 429, 200]
    assert log["attempt_log"][0]["error"] == "http_error"


async def test_410_stops_retries_and_redeliver_sends_again(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client)
    start_worker()
    with running_receiver(script=[410]) as receiver:
        task = await submit(client, team, callback_url=receiver.url)

        async def stopped() -> list[Any] | None:
            log = await deliveries(client, team, task["task_id"])
            return log if log and log[0]["status"] == "stopped" else None

        (log,) = await wait_for(stopped)
        assert log["attempts"] == 1 and len(receiver.received) == 1
        answer = await client.post(
            f"/v1/tasks/{task['task_id']}/deliveries/{log['id']}/redeliver", headers=team.headers
        )
        assert answer.status_code == 200 and answer.json()["status"] == "pending"
        await wait_for(lambda: _count(receiver, 2))
        assert receiver.ids() == [log["id"], log["id"]]
    missing = await client.post(
        f"/v1/tasks/{task['task_id']}/deliveries/msg_nope/redeliver", headers=team.headers
    )
    assert missing.status_code == 404


async def test_an_unresponsive_receiver_does_not_slow_other_deliveries(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    start_worker(webhook_timeout_seconds=20)
    with running_receiver(default="hang") as stuck, running_receiver() as healthy:
        slow = await submit(client, team, callback_url=stuck.url)
        await wait_terminal(client, team, slow["task_id"])
        fast = await submit(client, team, callback_url=healthy.url)
        await wait_for(lambda: _count(healthy, 1))
        # The healthy receiver got its event while the stuck one still holds the first try.
        attempts = await db.fetch(
            "SELECT a.finished_at FROM webhook_attempts a "
            "JOIN webhook_events e ON e.id = a.event_id WHERE e.task_id = $1",
            slow["task_id"],
        )
        assert [a["finished_at"] for a in attempts] == [None]  # logged as started, not ended
        assert json.loads(healthy.received[0].body)["task_id"] == fast["task_id"]


async def test_a_worker_killed_mid_delivery_delivers_again_with_the_same_id(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client)
    doomed = start_worker()
    with running_receiver(script=["hang"]) as receiver:
        task = await submit(client, team, callback_url=receiver.url)
        await wait_terminal(client, team, task["task_id"])
        await wait_for(lambda: _in_flight(receiver))  # the doomed worker's request is held
        doomed.kill()
        receiver.release.set()  # the dead worker's request completes into a closed socket
        start_worker()
        await wait_for(lambda: _count(receiver, 2), timeout=30)
        assert len(set(receiver.ids())) == 1
    (log,) = await deliveries(client, team, task["task_id"])
    assert log["status"] == "delivered"


async def _in_flight(receiver: Receiver) -> bool:
    return not receiver.script  # the "hang" answer was taken by a request


async def test_callback_events_filter_and_processing_progress(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client)
    await sim.put("/_sim/config", json={"queue_seconds": 0.2, "processing_seconds": 1.5})
    start_worker()
    with running_receiver() as receiver:
        task = await submit(
            client,
            team,
            callback_url=receiver.url,
            callback_events=["queued", "processing", "completed"],
        )
        await wait_terminal(client, team, task["task_id"])
        # Each event is its own delivery: they may arrive in any order (as with Svix or
        # Stripe; a `queued` committed before the worker listened comes by the sweeper);
        # the body says which state it reports.
        await wait_for(lambda: _has(receiver, "completed", "queued"))
        events = receiver.events()
        assert {"queued", "processing", "completed"} <= set(events)
        assert events.count("queued") == events.count("completed") == 1
        for got in receiver.received:
            body = json.loads(got.body)
            assert body["status"] == body["event"]
    with running_receiver() as only_failed:
        await submit(client, team, callback_url=only_failed.url, callback_events=["failed"])
        ok = await submit(client, team)
        await wait_terminal(client, team, ok["task_id"])
    assert only_failed.received == []
    bad = await client.post(
        "/v1/tasks",
        json={"model": "minimax-hailuo-2.3", "prompt": "x", "callback_events": ["finished"]},
        headers=team.headers,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("callback_events")


async def _has(receiver: Receiver, *events: str) -> bool:
    return set(events) <= set(receiver.events())


async def test_rotation_signs_with_old_and_new_secrets(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any
) -> None:
    team = await make_team(client)
    old = team.team["webhook_secret"]
    rotated = await client.post(
        f"/admin/teams/{team.team['id']}/webhook-secret/rotate", headers=ADMIN
    )
    assert rotated.status_code == 200
    new = rotated.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old
    start_worker()
    with running_receiver() as receiver:
        await submit(client, team, callback_url=receiver.url)
        await wait_for(lambda: _count(receiver, 1))
        got = receiver.received[0]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert verify(team, got, old)["event"] == verify(team, got, new)["event"] == "completed"


async def test_admin_resends_failed_deliveries_since_a_time(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    start_worker()
    with running_receiver(default=500) as receiver:
        task = await submit(client, team, callback_url=receiver.url)

        async def failed() -> bool:
            log = await deliveries(client, team, task["task_id"])
            return bool(log) and log[0]["status"] == "failed"

        await wait_for(failed, timeout=30)
        assert len(receiver.received) == 5  # the first try and the four scheduled retries
        receiver.default = 200
        since = await db.fetchval("SELECT min(created_at) FROM webhook_events")
        answer = await client.post(
            f"/admin/teams/{team.team['id']}/webhooks/redeliver-failed",
            json={"since": since.isoformat()},
            headers=ADMIN,
        )
        assert answer.json() == {"redelivered": 1}
        await wait_for(lambda: _count(receiver, 6))
    (log,) = await deliveries(client, team, task["task_id"])
    assert log["status"] == "delivered"


async def test_a_name_resolving_to_loopback_is_blocked_at_connect_time(
    client: httpx.AsyncClient, res: Resources, settings: Settings, db: asyncpg.Connection
) -> None:
    strict = WebhookSender(settings.model_copy(update={"webhook_allow_networks": ""}))
    try:
        strict_res = dataclasses.replace(res, webhooks=strict)
        team = await make_team(client)
        with running_receiver() as receiver:
            port = receiver.url.split(":")[2].split("/")[0]
            task = await submit(client, team, callback_url=f"http://localhost:{port}/hook")
            await db.execute(
                "UPDATE tasks SET status = 'completed', dispatch_state = 'done' WHERE id = $1",
                task["task_id"],
            )
            await db.execute(
                "INSERT INTO webhook_events (id, team_id, task_id, event, url, payload) "
                "VALUES ('msg_ssrf', $1, $2, 'completed', $3, '{}')",
                team.team["id"],
                task["task_id"],
                f"http://localhost:{port}/hook",
            )
            outcome = await jobs.deliver_webhook({"resources": strict_res}, "msg_ssrf")
            assert outcome == "blocked" and receiver.received == []
        (log,) = await deliveries(client, team, task["task_id"])
        assert log["status"] == "failed" and log["last_error"] == "blocked_destination"
    finally:
        await strict.aclose()


async def test_budget_threshold_alert_goes_to_the_teams_alert_url(
    client: httpx.AsyncClient, res: Resources, start_worker: Any
) -> None:
    start_worker()
    with running_receiver() as receiver:
        team = await make_team(client, alert_url=receiver.url)
        price = parse_usd(prices.usd())  # the generation's price of task_body()
        limit = f"{2 * price / 1_000_000:.6f}"
        await client.put(
            f"/admin/teams/{team.team['id']}/budgets",
            json={"budgets": [{"window": "day", "limit_usd": limit}]},
            headers=ADMIN,
        )
        await submit(client, team)
        await wait_for(lambda: _count(receiver, 1))
        alert = verify(team, receiver.received[0])
        assert alert["event"] == "budget.threshold" and alert["percent"] == 50
        assert (alert["scope"], alert["window"]) == ("team", "day")
