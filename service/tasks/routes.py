"""The Qingbo-compatible task endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from sse_starlette.sse import EventSourceResponse

from service.budgets.schemas import Estimate
from service.catalog.generations import ApiVersion
from service.catalog.rules import check_metadata
from service.catalog.schemas import Status, TaskRequest
from service.catalog.statuses import STATUSES
from service.config import Settings
from service.platform.db import OnDemandConnection
from service.platform.errors import (
    BudgetExceeded,
    ConcurrencyLimited,
    IdempotencyConflict,
    InvalidRequest,
    ModelNotAllowed,
    NotCancellable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServiceError,
    Unauthorized,
    UpstreamUnavailable,
)
from service.platform.lean_route import lean_post
from service.platform.openapi import error_responses
from service.platform.types import Storable
from service.tasks import service, waiting
from service.tasks.render import render_cancelled, render_task
from service.tasks.resources import AppResources
from service.tasks.schemas import (
    SyncTaskObject,
    SyncTaskObjectCurrent,
    TaskAnswer,
    TaskList,
)
from service.tasks.states import DispatchState
from service.teams.auth import CurrentCaller, TeamCtx, team_key_checked
from service.teams.service import Caller
from service.web import AppSettings, guarded_route, read_task_body, shared

# The key is checked before a byte of a body is read, and a body is a task's at most.
router = APIRouter(tags=["tasks"], route_class=guarded_route(team_key_checked, read_task_body))
TaskId = Annotated[str, Path(max_length=100), Storable]
QingboVersion = Annotated[
    ApiVersion | None,
    Header(
        alias="Qingbo-Version",
        description="Answer shape for this call (else the team's api_version): 2026-04 or 2026-09",
    ),
]
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*([^,;\s]*)", re.IGNORECASE)


def _version(caller: Caller, requested: str | None) -> str:
    return requested or caller.api_version


def _base_url(settings: Settings, request: Request) -> str:
    return settings.public_base_url or str(request.base_url)


_METADATA_PARAM = re.compile(r"^metadata\[(.*)\]$")


def metadata_filter(params: list[tuple[str, str]]) -> dict[str, str] | None:
    """`metadata[KEY]=VALUE` query parameters as one filter (every pair must match)."""
    wanted: dict[str, str] = {}
    for name, value in params:
        match = _METADATA_PARAM.match(name)
        if match is None:
            continue
        try:
            wanted.update(check_metadata({match.group(1): value}))
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=name) from None
    return check_metadata(wanted) if wanted else None


def prefer_wait(value: str | None, limit: float) -> float | None:
    """Seconds asked for by `Prefer: wait=N` (RFC 7240), capped at `limit`; None if absent."""
    match = _PREFER_WAIT.search(value or "")
    if match is None:
        return None
    seconds = match.group(1)
    # ASCII digits only: "²" passes str.isdigit() and float() refuses it, "٣" reads as 3.
    if not (seconds.isascii() and seconds.isdigit()):
        raise InvalidRequest("Prefer: wait takes whole seconds, e.g. wait=30", param="Prefer")
    return min(float(seconds), limit)  # any number of digits: capped


def _json(content: Any, headers: dict[str, str] | None = None) -> Response:
    # Rendered rows are already JSON-ready: skip response-model re-validation on hot paths.
    return Response(orjson.dumps(content), media_type="application/json", headers=headers)


SUBMIT_ERRORS: list[type[ServiceError]] = [
    InvalidRequest,
    Unauthorized,
    BudgetExceeded,
    ModelNotAllowed,
    IdempotencyConflict,
    PayloadTooLarge,
    RequestTimeout,
    RateLimited,
    ConcurrencyLimited,
]


@lean_post(  # the hot path: a handler of its own (service/platform/lean_route.py)
    router,
    "/v1/tasks",
    read_body=read_task_body,
    response_model=TaskAnswer,
    summary="Submit a task",
    responses=error_responses(*SUBMIT_ERRORS),
)
async def submit_task(
    body: TaskRequest,
    caller: CurrentCaller,
    res: AppResources,
    request: Request,
    qingbo_version: QingboVersion = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key"), Storable] = None,
    prefer: Annotated[
        str | None,
        Header(description="`wait=N`: hold up to N seconds for the terminal task"),
        Storable,
    ] = None,
) -> Any:
    """Submit a video task: Qingbo's body and answer; the price is reserved before it is
    queued. With `Prefer: wait=N` (N capped by QGW_SYNC_MAX_WAIT_SECONDS) the answer is the
    terminal task if it ends in time, else the task as it is then."""
    wait = prefer_wait(prefer, res.settings.sync_max_wait_seconds)
    async with OnDemandConnection(res.pool) as db:  # taken only when admission needs it
        admission = await service.admit_task(
            res, db, caller=caller, body=body, idempotency_key=idempotency_key
        )
    row, headers = admission.row, admission.headers
    if wait is not None:  # no connection is held while waiting
        async with _watch_disconnect(request) as gone:
            row = await waiting.wait_for_outcome(
                res, caller=caller, task_id=row["id"], wait_seconds=wait, gone=gone
            )
        headers = {**headers, "Preference-Applied": f"wait={int(wait)}"}
    task = render_task(
        row,
        version=_version(caller, qingbo_version),
        base_url=_base_url(res.settings, request),
        submit_answer=True,
    )
    return _json(task, headers)


@lean_post(
    router,
    "/v1/tasks/sync",
    read_body=read_task_body,
    response_model=SyncTaskObject | SyncTaskObjectCurrent,
    summary="Submit a task and wait",
    responses=error_responses(*SUBMIT_ERRORS),
)
async def submit_task_sync(
    body: TaskRequest,
    caller: CurrentCaller,
    res: AppResources,
    request: Request,
    timeout: Annotated[float | None, Query(ge=0, le=600, description="Seconds to wait")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key"), Storable] = None,
    qingbo_version: QingboVersion = None,
) -> Any:
    """Qingbo's synchronous mode (2026-04): the finished task, or the task so far and a
    poll_url. A caller that hangs up stops only its wait; the task goes on."""
    limit = res.settings.sync_max_wait_seconds
    async with _watch_disconnect(request) as gone:
        admission = await waiting.submit_and_wait(
            res,
            caller=caller,
            body=body,
            idempotency_key=idempotency_key,
            wait_seconds=limit if timeout is None else min(timeout, limit),
            gone=gone,
        )
    row = admission.row
    task = render_task(
        row,
        version=_version(caller, qingbo_version),
        base_url=_base_url(res.settings, request),
        submit_answer=True,
    )
    if row["dispatch_state"] != DispatchState.DONE:
        task["poll_url"] = str(request.url_for("get_task", task_id=row["id"]))
    return _json(task, admission.headers)


@contextlib.asynccontextmanager
async def _watch_disconnect(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client hangs up (the body has been read by then)."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


@router.get(
    "/v1/tasks/{task_id}/events",
    summary="Stream the task's changes (server-sent events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["event", "id", "data"],
                        "properties": {
                            "event": {"type": "string", "enum": [*STATUSES, "error"]},
                            "id": {"type": "string", "description": "the state's version"},
                            "data": {"type": "string", "description": "the task as JSON"},
                        },
                    }
                }
            },
            "description": "`event: <status>`, `id: <version>`, `data: <the task as JSON>`; "
            "ends after the terminal event; `: ping` comments keep idle streams open; "
            "a key revoked meanwhile ends it with `event: error` (`data`: the error envelope)",
        },
        **error_responses(InvalidRequest, Unauthorized, NotFound),
    },
)
async def task_events(
    task_id: TaskId,
    caller: CurrentCaller,
    res: AppResources,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    qingbo_version: QingboVersion = None,
) -> Any:
    """The task now, then each status or progress change, until the terminal event. Send
    `Last-Event-ID` on reconnect to skip what was already seen without missing anything."""
    await service.require_task(res.pool, caller=caller, task_id=task_id)  # 404 before streaming
    return EventSourceResponse(
        waiting.task_events(
            res,
            caller=caller,
            task_id=task_id,
            last_event_id=last_event_id,
            version=_version(caller, qingbo_version),
            base_url=_base_url(res.settings, request),
        ),
        ping=res.settings.sse_keepalive_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/v1/tasks/estimate",
    response_model=Estimate,
    summary="Price a task and check it against the budgets",
    responses=error_responses(
        InvalidRequest, Unauthorized, ModelNotAllowed, PayloadTooLarge, RequestTimeout
    ),
)
async def estimate_task(body: TaskRequest, ctx: TeamCtx, res: AppResources) -> Any:
    """What the task would cost and whether every budget covering it has room: nothing is
    submitted, reserved or counted against the rate limits."""
    return _json(await service.estimate_task(res, ctx.conn, caller=ctx.caller, body=body))


@router.get(
    "/v1/tasks/{task_id}",
    response_model=TaskAnswer,
    summary="Get a task",
    responses=error_responses(InvalidRequest, Unauthorized, NotFound),
)
async def get_task(
    task_id: TaskId,
    ctx: TeamCtx,
    settings: AppSettings,
    res: AppResources,
    request: Request,
    qingbo_version: QingboVersion = None,
) -> Any:
    """The task in Qingbo's shape (the answer version asked for), plus the gateway's fields."""
    row = await service.get_task(ctx.conn, caller=ctx.caller, task_id=task_id)
    if res.watching is not None and row["dispatch_state"] != DispatchState.DONE:
        res.watching.look(task_id)  # read at the watched pace a while (no write here)
    version = _version(ctx.caller, qingbo_version)
    return _json(render_task(row, version=version, base_url=_base_url(settings, request)))


@router.get(
    "/v1/tasks",
    response_model=TaskList,
    summary="List the team's tasks",
    responses=error_responses(InvalidRequest, Unauthorized),
)
async def list_tasks(
    ctx: TeamCtx,
    settings: AppSettings,
    request: Request,
    qingbo_version: QingboVersion = None,
    status: Status | None = None,
    model: Annotated[str | None, Query(max_length=100), Storable] = None,
    family: Annotated[str | None, Query(max_length=100), Storable] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200), Storable] = None,
) -> Any:
    """The team's tasks, newest first, filtered by status, model, model family and metadata
    (`?metadata[project]=atlas`, several combine); page with next_cursor."""
    rows, next_cursor = await service.list_tasks(
        ctx.conn,
        caller=ctx.caller,
        status=status,
        model=model,
        limit=limit,
        cursor=cursor,
        metadata=metadata_filter(request.query_params.multi_items()),
        family=family,
        catalog=shared(request).catalog,
    )
    version, base_url = _version(ctx.caller, qingbo_version), _base_url(settings, request)
    data = [render_task(r, version=version, base_url=base_url) for r in rows]
    return _json({"object": "list", "data": data, "next_cursor": next_cursor})


@router.post(
    "/v1/tasks/{task_id}/cancel",
    response_model=TaskAnswer,
    summary="Cancel a task",
    responses=error_responses(
        InvalidRequest, Unauthorized, NotFound, NotCancellable, UpstreamUnavailable
    ),
)
async def cancel_task(
    task_id: TaskId,
    res: AppResources,
    caller: CurrentCaller,
    request: Request,
    qingbo_version: QingboVersion = None,
) -> Any:
    """Cancel a queued task (at Qingbo too, if it was sent); its reservation is released."""
    row = await service.cancel_task(res, caller=caller, task_id=task_id)
    version = _version(caller, qingbo_version)
    return _json(render_cancelled(row, version=version, base_url=_base_url(res.settings, request)))
