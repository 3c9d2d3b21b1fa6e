"""The submit routes' own handler (service/platform/lean_route.py) answers as FastAPI's would."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from packaging.requirements import Requirement

from service.catalog.schemas import TaskRequest
from service.platform.lean_route import LeanRoute, lean_post
from service.tasks import routes as task_routes
from service.web import read_task_body
from tests.factories import make_team, task_body

ROOT = Path(__file__).resolve().parent.parent

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


# What lean_route.py takes from FastAPI's private modules, and how it calls each: a release
# that renames one or changes its parameters fails here, not under load.
PRIVATE_API = {
    ("fastapi._compat", "get_missing_field_error"): ("loc",),
    ("fastapi._compat", "field_annotation_is_sequence"): ("annotation",),
    ("fastapi.dependencies.utils", "_get_param_aliases"): ("field",),
    ("fastapi.dependencies.utils", "_get_param_model"): ("field",),
    ("fastapi.dependencies.utils", "_is_json_field"): ("field",),
    ("fastapi.dependencies.utils", "request_body_to_args"): (
        "body_fields",
        "received_body",
        "embed_body_fields",
    ),
}
DEPENDANT_ATTRIBUTES = (
    "cookie_params",
    "background_tasks_param_name",
    "response_param_name",
    "websocket_param_name",
    "security_scopes_param_name",
    "header_params",
    "query_params",
    "path_params",
    "body_params",
    "request_param_name",
    "http_connection_param_name",
    "dependencies",
    "call",
    "name",
)


@pytest.mark.parametrize(("where", "parameters"), PRIVATE_API.items(), ids=str)
def test_fastapis_private_helpers_are_still_what_the_lean_route_calls(
    where: tuple[str, str], parameters: tuple[str, ...]
) -> None:
    module, name = where
    helper = getattr(importlib.import_module(module), name, None)
    assert helper is not None, f"{module}.{name} is gone: re-check service/platform/lean_route.py"
    assert tuple(inspect.signature(helper).parameters)[: len(parameters)] == parameters


def test_a_dependant_still_describes_what_the_plan_reads() -> None:
    route = next(r for r in task_routes.router.routes if isinstance(r, LeanRoute))
    for attribute in DEPENDANT_ATTRIBUTES:
        assert hasattr(route.dependant, attribute), attribute
    for sub in route.dependant.dependencies:
        for attribute in DEPENDANT_ATTRIBUTES:
            assert hasattr(sub, attribute), (sub.name, attribute)


def test_the_installed_fastapi_is_one_the_lean_route_was_checked_against() -> None:
    """pyproject.toml bounds FastAPI to the releases these tests passed on: an environment
    outside the bound (a lock file ignored, a manual upgrade) fails here first."""
    spec = next(
        dep
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if Requirement(dep).name == "fastapi"
    )
    requirement = Requirement(spec)
    assert requirement.specifier.filter([importlib.metadata.version("fastapi")]), requirement
    assert any(s.operator == "<" for s in requirement.specifier), "keep an upper bound"
