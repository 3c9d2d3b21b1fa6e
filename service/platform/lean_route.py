"""A FastAPI route for the hot endpoints that solves their parameters from a plan made once.

Why: FastAPI's request handler does generic work on every request (dependency cache keys,
OAuth scopes, exit stacks, a Response for headers, endpoint context for error messages,
telemetry hooks), whatever the endpoint declares, and on POST /v1/tasks that work was a
large share of the API's CPU per submission (bench/cpu.py with --py-spy; figures in
bench/RESULTS.md, the decision in docs/decisions/). A LeanRoute keeps FastAPI's
declaration, so the OpenAPI document, the validation (FastAPI's own functions, so the same
errors reach the same handlers) and the signature are unchanged, and solves the same
parameters with a plan worked out when the app is built.

It leans on private FastAPI helpers, so pyproject.toml bounds FastAPI to the releases that
tests/test_lean_route.py passed on (the helpers' names and parameters, and the same
answers as FastAPI's own handler for bad bodies, headers and queries).

It takes what those endpoints use: the `Request`, header, query and path parameters, one
JSON body (read after every dependency, the caller's authentication among them, by the
route's bounded `read_body`: see service/platform/bodies.py), and dependencies that are `async
def` functions (or callables such as HTTPBearer) of the request and of other such
dependencies. Anything else (yield dependencies, forms, background tasks, an endpoint that
returns no Response, dependency overrides) is refused when the route is built or called,
never served differently.
"""

from __future__ import annotations

import copy
import email.message
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from fastapi._compat import (
    ModelField,
    Undefined,
    field_annotation_is_sequence,
    get_missing_field_error,
)
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    request_body_to_args,
)
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response

from service.platform.bodies import BodyReader

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Step:
    """One dependency: its callable, the name it is passed as, and what it takes."""

    call: Callable[..., Awaitable[Any]]
    name: str | None
    request_params: tuple[str, ...]  # given the request (as Request or HTTPConnection)
    steps: tuple[_Step, ...]


def _plan(dependant: Dependant, *, top: bool) -> _Step:
    unsupported = bool(
        dependant.cookie_params
        or dependant.background_tasks_param_name
        or dependant.response_param_name
        or dependant.websocket_param_name
        or dependant.security_scopes_param_name
    )
    if not top and (dependant.header_params or dependant.query_params or dependant.body_params):
        unsupported = True  # a dependency's own parameters: FastAPI's handler solves those
    call = dependant.call
    if unsupported or call is None:
        raise TypeError(f"LeanRoute cannot solve {dependant.path or dependant.name}")
    # A callable instance (HTTPBearer) is judged by its __call__.
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        raise TypeError(f"LeanRoute does not run yield dependencies ({dependant.name})")
    if not inspect.iscoroutinefunction(target):
        raise TypeError(f"LeanRoute runs async endpoints and dependencies only ({call})")
    return _Step(
        call=call,
        name=dependant.name,
        request_params=tuple(
            name
            for name in (dependant.request_param_name, dependant.http_connection_param_name)
            if name
        ),
        steps=tuple(_plan(sub, top=False) for sub in dependant.dependencies),
    )


async def _solve(step: _Step, request: Request, cache: dict[Any, Any]) -> dict[str, Any]:
    """The keyword arguments of `step.call`: the request and its dependencies' values (each
    dependency once per request, as FastAPI caches them)."""
    values: dict[str, Any] = {}
    for name in step.request_params:
        values[name] = request
    for sub in step.steps:
        if sub.call not in cache:
            cache[sub.call] = await sub.call(**await _solve(sub, request, cache))
        if sub.name is not None:
            values[sub.name] = cache[sub.call]
    return values


# Defaults that cannot be changed by whoever receives them: handed out as they are.
_IMMUTABLE = (type(None), str, int, float, bool, bytes, tuple, frozenset)


@dataclass(frozen=True)
class _Param:
    """A header, query or path parameter: one plain value under one name."""

    field: ModelField
    alias: str
    loc: tuple[str, str]

    def value(self, received: Any, values: dict[str, Any], errors: list[Any]) -> None:
        """FastAPI's request_params_to_args for one such field (its checks made once)."""
        raw = received.get(self.alias)
        if raw is None:
            if self.field.field_info.is_required():
                errors.append(get_missing_field_error(loc=self.loc))
                return
            default = self.field.default
            if not isinstance(default, _IMMUTABLE):  # FastAPI copies a default it hands out
                default = copy.deepcopy(default)
            if not self.field.field_info.validate_default:
                values[self.field.name] = default
                return
            raw = default
        value, wrong = self.field.validate(raw, values, loc=self.loc)
        if wrong:
            errors.extend(wrong)
        else:
            values[self.field.name] = value


def _params(fields: list[ModelField], kind: str) -> tuple[_Param, ...]:
    params = []
    for field in fields:
        aliases = _get_param_aliases(field)
        if (
            len(aliases) != 1
            or _get_param_model(field) is not None
            or _is_json_field(field)
            or field_annotation_is_sequence(field.field_info.annotation)
        ):
            raise TypeError(f"LeanRoute takes plain {kind} parameters only ({field.name})")
        params.append(_Param(field=field, alias=aliases[0][1], loc=(kind, aliases[0][1])))
    return tuple(params)


@functools.lru_cache(maxsize=64)  # a few content types, parsed once each
def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule (strict content type): a JSON body says so."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class LeanRoute(APIRoute):
    """An APIRoute whose handler solves the endpoint's parameters from a plan (see above)."""

    read_body: ClassVar[BodyReader | None] = None  # set by lean_post

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        plan = _plan(dependant, top=True)
        read_body = type(self).read_body
        if self.body_field is not None and read_body is None:
            raise TypeError(f"LeanRoute {self.path} takes a body: give it a bounded read_body")
        sources = (
            ("path_params", _params(dependant.path_params, "path")),
            ("query_params", _params(dependant.query_params, "query")),
            ("headers", _params(dependant.header_params, "header")),
        )
        body_field = self.body_field
        endpoint = self.endpoint
        overrides = self.dependency_overrides_provider

        async def app(request: Request) -> Response:
            if overrides is not None and getattr(overrides, "dependency_overrides", None):
                raise RuntimeError("LeanRoute does not apply dependency overrides")
            errors: list[Any] = []
            values = await _solve(plan, request, {})
            for source, params in sources:
                if params:
                    received = getattr(request, source)
                    for param in params:
                        param.value(received, values, errors)
            body: Any = Undefined
            if body_field is not None and read_body is not None:
                raw = await read_body(request)  # after the dependencies: the caller is known
                body = raw or Undefined  # no body: FastAPI's "missing"
                if raw and _is_json(request.headers.get("content-type")):
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError as exc:
                        raise RequestValidationError(
                            [
                                {
                                    "type": "json_invalid",
                                    "loc": ("body", exc.pos),
                                    "msg": "JSON decode error",
                                    "input": {},
                                    "ctx": {"error": exc.msg},
                                }
                            ],
                            body=exc.doc,
                        ) from exc
                    except (ValueError, RecursionError) as exc:  # not UTF-8, nested too deep:
                        # FastAPI's answer to both (its handler catches every exception here)
                        raise HTTPException(400, "There was an error parsing the body") from exc
                found, wrong = await request_body_to_args([body_field], body, False)
                values.update(found)
                errors.extend(wrong)
            if errors:
                raise RequestValidationError(errors, body=None if body is Undefined else body)
            response = await endpoint(**values)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a LeanRoute endpoint returns a Response")
            return response

        return app


def lean_post(
    router: APIRouter, path: str, *, read_body: BodyReader, **kwargs: Any
) -> Callable[[F], F]:
    """`@router.post(path, ...)` served by a LeanRoute that reads its body with `read_body`."""
    route_class = type("LeanRoute", (LeanRoute,), {"read_body": staticmethod(read_body)})

    def decorator(endpoint: F) -> F:
        router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=route_class, **kwargs
        )
        return endpoint

    return decorator
