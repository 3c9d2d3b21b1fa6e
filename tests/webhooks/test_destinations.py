"""A team reaches only destinations that are public or that an operator opened, and its
delivery log tells it only what its own receiver could have (issue 31, point 5). Real
receivers on loopback aliases stand in for the company's network; the suite's gateway
opens 127.0.0.0/8, so these tests run senders and workers that open less."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.tasks.resources import Resources
from service.webhooks.delivery import WebhookSender
from service.webhooks.ids import new_event_id
from service.webhooks.repository import insert_event
from tests.factories import ADMIN, TeamKey, make_team, submit, wait_for
from tests.webhooks.receiver import running_receiver

pytestmark = pytest.mark.usefixtures("api_server")


async def deliveries(client: httpx.AsyncClient, team: TeamKey, task_id: str) -> list[Any]:
    answer = await client.get(f"/v1/tasks/{task_id}/deliveries", headers=team.headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


async def settled(client: httpx.AsyncClient, team: TeamKey, task_id: str) -> list[Any]:
    async def done() -> list[Any] | None:
        log = await deliveries(client, team, task_id)
        return log if log and log[0]["status"] in ("delivered", "failed") else None

    return await wait_for(done, timeout=30)


async def test_a_loopback_alias_is_closed_unless_the_team_has_it_opened(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, start_worker: Any, logs_dir: Path
) -> None:
    # The worker opens only 127.0.0.1 (the simulator) for the company; 127.0.0.2 is the
    # company's network here, opened for one team only.
    start_worker(webhook_allow_networks="127.0.0.1/32")

    async def says_what_is_open() -> bool:  # the worker's start-up line
        log = (logs_dir / "worker.log").read_text("utf-8", "replace")
        return "public addresses, and opened for the company: 127.0.0.1/32;" in log

    await wait_for(says_what_is_open)
    api_log = (logs_dir / "api.log").read_text("utf-8", "replace")
    assert "opened for the company: 127.0.0.0/8;" in api_log  # the API process's
    closed = await make_team(client)
    opened = await make_team(client, open_destinations=["127.0.0.2/32"])
    with running_receiver(host="127.0.0.2") as receiver:
        refused = await submit(client, closed, callback_url=receiver.url)
        let_through = await submit(client, opened, callback_url=receiver.url)
        (blocked,) = await settled(client, closed, refused["task_id"])
        (delivered,) = await settled(client, opened, let_through["task_id"])
        assert [json.loads(r.body)["task_id"] for r in receiver.received] == [
            let_through["task_id"]
        ]
    assert delivered["status"] == "delivered" and delivered["attempt_log"][0]["error"] is None
    assert blocked["status"] == "failed" and blocked["attempts"] == 1
    assert blocked["last_error"] == "blocked_destination"
    (attempt,) = blocked["attempt_log"]
    assert attempt["error"] == "blocked_destination" and attempt["status_code"] is None
    assert attempt["response_headers"] == {}


@pytest.fixture
async def strict(res: Resources) -> AsyncIterator[WebhookSender]:
    """A sender of a company that opened nothing: loopback is closed to every team."""
    sender = WebhookSender(res.settings.model_copy(update={"webhook_allow_networks": ""}))
    yield sender
    await sender.aclose()


async def event_to(
    db: asyncpg.Connection, client: httpx.AsyncClient, team: TeamKey, url: str
) -> str:
    task_id = (await submit(client, team))["task_id"]
    event_id = new_event_id()
    await insert_event(
        db,
        event_id=event_id,
        team_id=team.team["id"],
        task_id=task_id,
        event="completed",
        url=url,
        payload={"event": "completed", "task_id": task_id},
    )
    return event_id


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time_unless_opened(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, strict: WebhookSender
) -> None:
    closed = await make_team(client)
    opened = await make_team(client, open_destinations=["localhost"])
    with running_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        url = f"http://localhost:{port}/hook"
        refused = await event_to(db, client, closed, url)
        assert (await strict.deliver(res.pool, refused))[0] == "blocked"
        assert receiver.received == []
        let_through = await event_to(db, client, opened, url)
        assert (await strict.deliver(res.pool, let_through))[0] == "delivered"
        assert len(receiver.received) == 1
        assert receiver.received[0].headers["host"] == f"localhost:{port}"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_teams_log_shows_generic_error_classes_and_no_internal_detail(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, strict: WebhookSender
) -> None:
    team = await make_team(client)
    with running_receiver(default=500) as failing:
        cases = {
            "connection_refused": f"http://127.0.0.1:{closed_port()}/hook",
            "http_error": failing.url,
            "tls_error": failing.url.replace("http://", "https://"),  # TLS to a plain server
            "blocked_destination": f"http://localhost:{closed_port()}/hook",
        }
        task_of: dict[str, str] = {}
        for expected, url in cases.items():
            event_id = await event_to(db, client, team, url)
            task_of[expected] = await db.fetchval(
                "SELECT task_id FROM webhook_events WHERE id = $1", event_id
            )
            sender = strict if expected == "blocked_destination" else res.webhooks
            await sender.deliver(res.pool, event_id)
    for expected, task_id in task_of.items():
        (log,) = await deliveries(client, team, task_id)
        (attempt,) = log["attempt_log"]
        assert attempt["error"] == log["last_error"] == expected, log
        shown = json.dumps(log)
        assert "127.0.0.1" not in shown.replace(cases[expected], "")  # only its own URL
        assert "::1" not in shown and "Errno" not in shown and "Connect" not in shown
        assert "error_detail" not in attempt and "last_error_detail" not in log
        admin = await client.get(f"/admin/tasks/{task_id}/deliveries", headers=ADMIN)
        detail = admin.json()["data"][0]
        assert detail["attempt_log"][0]["error"] == expected
        assert detail["attempt_log"][0]["error_detail"] == detail["last_error_detail"]
    path = f"/admin/tasks/{task_of['connection_refused']}/deliveries"
    refused = (await client.get(path, headers=ADMIN)).json()["data"][0]
    assert "Connect call failed ('127.0.0.1'" in refused["last_error_detail"]  # operators see it
    (answered,) = (await deliveries(client, team, task_of["http_error"]))[0]["attempt_log"]
    assert answered["status_code"] == 500 and answered["latency_ms"] is not None


async def test_redeliver_is_rate_limited_per_team(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team, other = await make_team(client), await make_team(client)
    url = f"http://127.0.0.1:{closed_port()}/hook"  # nothing is sent: no worker runs
    event_id = await event_to(db, client, team, url)
    task_id = await db.fetchval("SELECT task_id FROM webhook_events WHERE id = $1", event_id)
    path = f"/v1/tasks/{task_id}/deliveries/{event_id}/redeliver"
    limit = res.settings.webhook_redeliveries_per_minute
    for _ in range(limit):
        assert (await client.post(path, headers=team.headers)).status_code == 200
    over = await client.post(path, headers=team.headers)
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    # Another team's re-sends are counted apart.
    other_event = await event_to(db, client, other, url)
    other_task = await db.fetchval("SELECT task_id FROM webhook_events WHERE id = $1", other_event)
    answer = await client.post(
        f"/v1/tasks/{other_task}/deliveries/{other_event}/redeliver", headers=other.headers
    )
    assert answer.status_code == 200
