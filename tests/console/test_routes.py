"""The console over HTTP: no page without a session, the cookie's flags, CSRF, a team sees
only its own, what a team typed is escaped, a revoked key's session ends."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from service.console.sessions import COOKIE
from service.tasks.resources import Resources
from tests.console.helpers import admin_signed_in, csrf_of, sign_in, signed_in
from tests.factories import ADMIN, make_team, submit

PAGES = [
    "/console/tasks",
    "/console/tasks/task-0123",
    "/console/tasks/task-0123/live",
    "/console/tasks/task-0123/video",
    "/console/money",
    "/console/money/spend.csv",
    "/console/keys",
    "/console/webhooks",
    "/console/operations",
]
CHANGES = [
    "/console/tasks/task-0123/cancel",
    "/console/tasks/task-0123/deliveries/evt/redeliver",
    "/console/teams/00000000-0000-0000-0000-000000000001/budgets",
    "/console/teams/00000000-0000-0000-0000-000000000001/limits",
    "/console/teams/00000000-0000-0000-0000-000000000001/keys",
    "/console/keys/00000000-0000-0000-0000-000000000001/revoke",
    "/console/teams/00000000-0000-0000-0000-000000000001/webhook-secret/rotate",
    "/console/company/budgets",
    "/console/sign-out",
]


def app_of(client: httpx.AsyncClient) -> Any:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app


def second_client(client: httpx.AsyncClient, base_url: str = "http://gateway") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(client)), base_url=base_url)


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_sends_a_stranger_to_sign_in(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=")


@pytest.mark.parametrize("path", CHANGES)
async def test_no_change_without_a_session(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.post(path, data={"csrf": "x", "name": "n"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


async def test_a_forged_cookie_is_no_session(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    await signed_in(client, team.key)
    forged = client.cookies[COOKIE].rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAA"
    async with second_client(client) as other:
        other.cookies.set(COOKIE, forged, domain="gateway.local", path="/console")
        assert (await other.get("/console/tasks")).status_code == 303


async def test_the_cookie_is_httponly_strict_and_holds_no_key(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    answer = await sign_in(client, team.key)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/tasks"
    cookie = answer.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    assert "secure" not in flags  # served over plain HTTP here
    assert team.key not in cookie and hashlib.sha256(team.key.encode()).hexdigest() not in cookie
    stored = [
        await res.redis.get(k)
        async for k in res.redis.scan_iter(match=f"{res.settings.arq_queue_name}:console-session:*")
    ]
    assert stored and all(team.key.encode() not in value for value in stored)
    # Idle expiry: the session lives QGW_CONSOLE_IDLE_MINUTES from its last request.
    keys = [
        k
        async for k in res.redis.scan_iter(match=f"{res.settings.arq_queue_name}:console-session:*")
    ]
    ttls = [await res.redis.ttl(k) for k in keys]
    assert all(0 < ttl <= res.settings.console_idle_minutes * 60 for ttl in ttls)
    page = await client.get("/console/tasks")
    assert team.key not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'


async def test_the_cookie_is_secure_over_https(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    async with second_client(client, "https://gateway") as https:
        answer = await sign_in(https, team.key)
    assert "secure" in {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}


async def test_a_wrong_secret_signs_nobody_in(client: httpx.AsyncClient) -> None:
    answer = await sign_in(client, "qgw_not-a-key")
    assert answer.status_code == 401
    assert COOKIE not in answer.headers.get("set-cookie", "")
    assert (
        await sign_in(client, "test-admin-token-padded-to-32-chars")
    ).status_code == 401  # no name
    assert (await client.get("/console/tasks")).status_code == 303


async def test_a_change_without_its_csrf_token_is_refused(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await signed_in(client, team.key)
    answer = await client.post(f"/console/tasks/{task['task_id']}/cancel", data={"csrf": "forged"})
    assert answer.status_code == 403
    still = await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)
    assert still.json()["status"] != "cancelled"
    token = await csrf_of(client)
    done = await client.post(f"/console/tasks/{task['task_id']}/cancel", data={"csrf": token})
    assert done.status_code == 303
    cancelled = await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)
    assert cancelled.json()["status"] == "cancelled"


async def test_another_teams_task_is_not_found(client: httpx.AsyncClient) -> None:
    mine, theirs = await make_team(client), await make_team(client)
    task = await submit(client, theirs)
    token = await signed_in(client, mine.key)
    for path in ("", "/live", "/video"):
        answer = await client.get(f"/console/tasks/{task['task_id']}{path}")
        assert answer.status_code == 404, path
        assert task["prompt"] not in answer.text
    cancel = await client.post(f"/console/tasks/{task['task_id']}/cancel", data={"csrf": token})
    assert cancel.status_code == 404
    listed = await client.get("/console/tasks")
    assert task["task_id"] not in listed.text
    # An admin sees every team's.
    async with second_client(client) as admin:
        await admin_signed_in(admin)
        page = await admin.get(f"/console/tasks/{task['task_id']}")
        assert page.status_code == 200
        assert task["prompt"] in page.text


async def test_what_a_team_typed_is_escaped(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    task = await submit(client, team, metadata={"project": hostile}, prompt=hostile)
    await signed_in(client, team.key)
    for path in ("/console/tasks", f"/console/tasks/{task['task_id']}"):
        page = await client.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(" in page.text


async def test_a_revoked_keys_session_ends(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    await signed_in(client, team.key)
    assert (await client.get("/console/tasks")).status_code == 200
    keys = await client.get(f"/admin/teams/{team.team['id']}/keys", headers=ADMIN)
    key_id = keys.json()["data"][0]["id"]
    assert (await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)).status_code == 204
    assert (await client.get("/console/tasks")).status_code == 303


async def test_sign_out_ends_the_session(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    token = await signed_in(client, team.key)
    cookie = client.cookies[COOKIE]
    answer = await client.post("/console/sign-out", data={"csrf": token})
    assert answer.status_code == 303
    async with second_client(client) as replay:  # the old cookie, replayed, is nobody
        replay.cookies.set(COOKIE, cookie, domain="gateway.local", path="/console")
        assert (await replay.get("/console/tasks")).status_code == 303


async def test_admin_pages_are_not_found_for_a_team(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    token = await signed_in(client, team.key)
    assert (await client.get("/console/operations")).status_code == 404
    issue = await client.post(
        f"/console/teams/{team.team['id']}/keys", data={"csrf": token, "name": "sneaky"}
    )
    assert issue.status_code == 404
    keys = await client.get(f"/admin/teams/{team.team['id']}/keys", headers=ADMIN)
    assert [k["name"] for k in keys.json()["data"]] == ["default"]


async def test_a_next_elsewhere_lands_on_the_tasks(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    answer = await sign_in(client, team.key, next="//evil.example/x")
    assert answer.headers["location"] == "/console/tasks"


async def test_a_sign_in_posted_from_elsewhere_is_refused(client: httpx.AsyncClient) -> None:
    """Another site's form carries no SameSite=Strict cookie of the sign-in page."""
    team = await make_team(client)
    forged = await client.post("/console/sign-in", data={"secret": team.key, "token": "x"})
    assert forged.status_code == 403
    assert COOKIE not in forged.headers.get("set-cookie", "")
    assert (await client.get("/console/tasks")).status_code == 303


async def test_each_request_restarts_the_idle_time(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    await signed_in(client, team.key)
    pattern = f"{res.settings.arq_queue_name}:console-session:*"
    [key] = [k async for k in res.redis.scan_iter(match=pattern)]
    await res.redis.expire(key, 5)
    assert (await client.get("/console/keys")).status_code == 200
    assert await res.redis.ttl(key) > 5
    await res.redis.delete(key)  # as when it expires
    assert (await client.get("/console/keys")).status_code == 303


async def test_console_routes_are_not_in_the_api_schema(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert not [p for p in spec["paths"] if p.startswith("/console")]


async def test_a_session_spans_the_processes_of_a_deployment(
    client_for: Any, client: httpx.AsyncClient
) -> None:
    """Without QGW_CONSOLE_SECRET each process would sign with a key of its own and refuse
    the others' cookies (`api --workers N`, replicas): the generated key is shared."""
    team = await make_team(client)
    async with client_for("2026-04") as one, client_for("2026-09") as other:
        assert app_of(one) is not app_of(other)
        await signed_in(one, team.key)
        other.cookies.set(COOKIE, one.cookies[COOKIE], domain="gateway.local", path="/console")
        assert (await other.get("/console/tasks")).status_code == 200


def test_a_weak_console_secret_is_refused_at_start() -> None:
    from service.config import Settings, weak_tokens

    assert weak_tokens(Settings(console_secret="short")) == [
        "QGW_CONSOLE_SECRET: at least 32 characters (e.g. `openssl rand -hex 32`), "
        "or empty to have one generated"
    ]
    assert weak_tokens(Settings(console_secret="x" * 32)) == []
