"""Bodies sent to hurt the API (issue 31, points 1 and 7): a real API process is sent real
20 MiB bodies of `[{},{},...]` (parsed whole, about 0.6 GB of Python objects) and its peak
memory is read from /proc. Nobody is heard before they are known: without a valid key,
token or callback token nothing of the body is read; each route reads at most what its
content needs; and a body's shape cannot make the API raise."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi.routing import APIRoute

from service.archive import routes as archive_routes
from service.audit import routes as audit_routes
from service.budgets import routes as budget_routes
from service.catalog import routes as catalog_routes
from service.catalog_admin import routes as catalog_admin_routes
from service.config import Settings
from service.platform.lean_route import LeanRoute
from service.spend import routes as spend_routes
from service.tasks import callback_routes
from service.tasks import routes as task_routes
from service.tasks.submission import hash_token
from service.teams import routes as team_routes
from service.web import GuardedRoute
from service.webhooks import routes as webhook_routes
from tests.edge_api import EdgeApi, edge_api
from tests.factories import ADMIN, make_team, task_body

MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


def bomb(size: int) -> bytes:
    """`[{},{},...]` of at most `size` bytes: small to send, huge once parsed."""
    count = (size - 2) // 3
    return b"[" + b"{}," * (count - 1) + b"{}]"


@pytest.fixture(scope="module")
def api(settings: Settings, logs_dir: Path) -> Iterator[EdgeApi]:
    with edge_api(settings, logs_dir) as running:
        yield running


@pytest.fixture
async def http(api: EdgeApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        yield client


def test_every_route_with_a_body_knows_its_caller_before_reading_it() -> None:
    """FastAPI reads a declared body before it authenticates: every such route of the API
    is a GuardedRoute or a LeanRoute, which authenticate first (the callback route declares
    no body: it reads it itself, after the token)."""
    routers = [
        task_routes.router,
        callback_routes.router,
        archive_routes.router,
        catalog_routes.router,
        catalog_admin_routes.router,
        team_routes.router,
        audit_routes.admin,
        *(m.router for m in (budget_routes, spend_routes, webhook_routes)),
        *(m.admin for m in (budget_routes, spend_routes, webhook_routes)),
    ]
    with_body = [
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.body_field is not None
    ]
    assert len(with_body) >= 9  # submit, sync, estimate, and the admin API's JSON bodies
    unguarded = [r.path for r in with_body if not isinstance(r, GuardedRoute | LeanRoute)]
    assert unguarded == []


async def a_task_with_callback_token(
    http: httpx.AsyncClient, db: asyncpg.Connection, token: str
) -> str:
    team = await make_team(http)
    answer = await http.post("/v1/tasks", json=task_body(), headers=team.headers)
    assert answer.status_code == 200, answer.text
    task_id = str(answer.json()["task_id"])
    await db.execute(
        "UPDATE tasks SET dispatch_state = 'submitted', upstream_task_id = 'up-x', "
        "callback_token_hash = $2 WHERE id = $1",
        task_id,
        hash_token(token),
    )
    return task_id


async def test_a_body_from_nobody_is_never_read(
    api: EdgeApi, http: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    task_id = await a_task_with_callback_token(http, db, "right-token")
    body = bomb(settings.max_request_bytes)
    team_id = uuid.uuid4()
    wrong = {"Authorization": "Bearer qgw_not-a-key"}
    not_admin = {"Authorization": "Bearer not-the-admin-token"}
    attempts: list[tuple[str, str, dict[str, str], int]] = [
        ("POST", "/v1/tasks/estimate", {}, 401),
        ("POST", "/v1/tasks/estimate", wrong, 401),
        ("POST", "/v1/tasks", wrong, 401),
        ("POST", "/v1/tasks/sync", {}, 401),
        ("POST", "/admin/teams", not_admin, 401),
        ("PATCH", f"/admin/teams/{team_id}", {}, 401),
        ("PUT", "/admin/budgets", not_admin, 401),
        ("PUT", f"/admin/teams/{team_id}/budgets", {}, 401),
        ("POST", f"/admin/teams/{team_id}/keys", not_admin, 401),
        ("POST", f"/admin/teams/{team_id}/webhooks/redeliver-failed", {}, 401),
        # A wrong callback token is answered as an unknown task: nothing to probe.
        ("POST", f"/internal/qingbo/callback/{task_id}?token=wrong", {}, 404),
        ("POST", "/internal/qingbo/callback/task-nope?token=right-token", {}, 404),
    ]
    before = api.peak_rss()
    for method, path, headers, status in attempts:
        answer = await http.request(method, path, content=body, headers={**JSON, **headers})
        assert answer.status_code == status, (method, path, answer.text[:300])
        assert answer.json()["error"]["code"] in ("unauthorized", "not_found")
    # The console's sign-in is read before anyone is known: a form of a few KiB at most.
    form = b"token=x&secret=" + b"a" * settings.max_request_bytes
    signing_in = await http.post(
        "/console/sign-in",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert signing_in.status_code == 413, signing_in.text[:300]
    grown = api.peak_rss() - before
    assert grown < 8 * MIB, f"peak RSS grew {grown / MIB:.0f} MiB"


async def test_each_route_reads_only_what_its_content_needs(
    api: EdgeApi, http: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    task_id = await a_task_with_callback_token(http, db, "right-token")
    team = await make_team(http)
    callback = f"/internal/qingbo/callback/{task_id}?token=right-token"
    before = api.peak_rss()
    # Qingbo's callback: a few KiB, read only once its token is checked.
    too_big = await http.post(callback, content=bomb(64 * 1024), headers=JSON)
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error"]["code"] == "payload_too_large"
    small = await http.post(callback, json={"task_id": "up-x", "status": "completed"})
    assert small.status_code == 200, small.text
    # Admin JSON: modest.
    team_patch = await http.patch(
        f"/admin/teams/{team.team['id']}",
        content=b'{"name": "' + b"n" * MIB + b'"}',
        headers={**JSON, **ADMIN},
    )
    assert team_patch.status_code == 413, team_patch.text
    assert team_patch.json()["error"]["code"] == "payload_too_large"
    # Where Base64 images are allowed: QGW_MAX_REQUEST_BYTES, declared or streamed.
    over = bomb(settings.max_request_bytes + 1024)

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(over), MIB):
            yield over[start : start + MIB]

    for content in (over, streamed()):
        answer = await http.post(
            "/v1/tasks/estimate", content=content, headers={**JSON, **team.headers}
        )
        assert answer.status_code == 413, answer.text[:300]
        assert answer.json()["error"]["code"] == "payload_too_large"
    grown = api.peak_rss() - before
    assert grown < 64 * MIB, f"peak RSS grew {grown / MIB:.0f} MiB"


async def test_a_body_of_countless_objects_is_refused_unparsed(
    api: EdgeApi, http: httpx.AsyncClient, settings: Settings
) -> None:
    """A key holder's body within the size limit cannot make the API build millions of
    objects either: a task body has a few dozen."""
    team = await make_team(http)
    body = bomb(settings.max_request_bytes)
    before = api.peak_rss()
    for path in ("/v1/tasks/estimate", "/v1/tasks", "/v1/tasks/sync"):
        answer = await http.post(path, content=body, headers={**JSON, **team.headers})
        assert answer.status_code == 400, (path, answer.text[:300])
        assert answer.json()["error"]["code"] == "invalid_request"
        assert answer.json()["error"]["param"] == "body"
    grown = api.peak_rss() - before
    # Reading 20 MiB costs about twice that (the chunks, then the body); parsing it, 0.6 GB.
    assert grown < 100 * MIB, f"peak RSS grew {grown / MIB:.0f} MiB"


def nested(depth: int) -> bytes:
    return b'{"model": "minimax-hailuo-2.3", "prompt": "a fox", "metadata": {"k": ' + (
        b"[" * depth + b"]" * depth + b"}}"
    )


@pytest.mark.parametrize("depth", [900, 2_000, 200_000])
async def test_deeply_nested_json_is_a_400(
    api: EdgeApi, http: httpx.AsyncClient, client: httpx.AsyncClient, depth: int
) -> None:
    """Through the in-process app and the real route: the same 400, never a 500."""
    for gateway in (client, http):
        team = await make_team(gateway)
        for path in ("/v1/tasks", "/v1/tasks/sync", "/v1/tasks/estimate"):
            answer = await gateway.post(
                path, content=nested(depth), headers={**JSON, **team.headers}
            )
            assert answer.status_code == 400, (path, answer.text[:300])
            assert answer.json()["error"]["code"] == "invalid_request"
