"""The submit routes' own handler (service/platform/lean_route.py) answers as FastAPI's would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, Request

from service.catalog.schemas import TaskRequest
from service.platform.lean_route import LeanRoute, lean_post
from service.tasks import routes as task_routes
from service.web import read_task_body
from tests.factories import make_team, task_body

BAD_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("not JSON", {"content": b'{"model": ', "headers": {"Content-Type": "application/json"}}),
    ("not UTF-8", {"content": b">\xff\xfe\x0f", "headers": {"Content-Type": "application/json"}}),
    ("no body", {"content": b""}),
    ("JSON without its content type", {"content": b'{"model": "x"}'}),
    ("text/plain", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
    ("a list", {"json": []}),
    ("a field of the wrong type", {"json": task_body(duration="six")}),
    ("a missing field", {"json": {"prompt": "a fox"}}),
    ("an unknown model", {"json": task_body(model="no-such-model")}),
    ("a NUL in the prompt", {"json": task_body(prompt="a\x00fox")}),
    (
        "nested deeper than JSON parsing goes",
        {"content": b"[" * 2000 + b"]" * 2000, "headers": {"Content-Type": "application/json"}},
    ),
    (
        "more JSON objects than a task has",
        {
            "content": b"[" + b"{}," * 20_000 + b"{}]",
            "headers": {"Content-Type": "application/json"},
        },
    ),
]


def test_the_submit_routes_are_lean_and_the_rest_fastapis() -> None:
    routes = {
        (method, route.path): route
        for route in task_routes.router.routes
        for method in getattr(route, "methods", None) or ()
    }
    assert isinstance(routes[("POST", "/v1/tasks")], LeanRoute)
    assert isinstance(routes[("POST", "/v1/tasks/sync")], LeanRoute)
    assert not isinstance(routes[("POST", "/v1/tasks/estimate")], LeanRoute)


@pytest.mark.parametrize(("case", "request_args"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_a_bad_body_gets_the_answer_fastapis_handler_gives(
    client: httpx.AsyncClient, case: str, request_args: dict[str, Any]
) -> None:
    """POST /v1/tasks/estimate takes the same body through FastAPI's own handler."""
    team = await make_team(client)
    headers = {**team.headers, **request_args.pop("headers", {})}
    lean = await client.post("/v1/tasks", headers=headers, **request_args)
    fastapi = await client.post("/v1/tasks/estimate", headers=headers, **request_args)
    assert lean.status_code == fastapi.status_code == 400, (case, lean.text)
    assert lean.json() == fastapi.json()
    assert lean.json()["error"]["code"] == "invalid_request"


async def test_bad_headers_and_query_name_the_parameter(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    version = await client.post(
        "/v1/tasks", json=task_body(), headers={**team.headers, "Qingbo-Version": "2025-01"}
    )
    assert version.status_code == 400
    assert version.json()["error"]["param"] == "Qingbo-Version"
    timeout = await client.post(
        "/v1/tasks/sync", params={"timeout": "-1"}, json=task_body(), headers=team.headers
    )
    assert timeout.status_code == 400
    assert timeout.json()["error"]["param"] == "timeout"
    no_key = await client.post("/v1/tasks", json=task_body())
    assert no_key.status_code == 401


async def held() -> AsyncIterator[int]:  # at module level: annotations are resolved here
    yield 1


async def endpoint_with_a_yield_dependency(value: Annotated[int, Depends(held)]) -> None:
    return None


async def endpoint_with_a_body(body: TaskRequest) -> None:
    return None


def test_what_it_cannot_solve_is_refused_when_the_route_is_built() -> None:
    with pytest.raises(TypeError, match="yield"):
        lean_post(APIRouter(), "/held", read_body=read_task_body)(endpoint_with_a_yield_dependency)

    def sync_endpoint(request: Request) -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        lean_post(APIRouter(), "/sync", read_body=read_task_body)(sync_endpoint)

    # A body is read only by a bounded reader (issue 31): none given, the route is refused.
    with pytest.raises(TypeError, match="read_body"):
        APIRouter().add_api_route(
            "/body", endpoint_with_a_body, methods=["POST"], route_class_override=LeanRoute
        )
