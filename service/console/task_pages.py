"""Tasks: the filtered, paged list, a task's page with its progress live and its video,
cancelling, and the video's bytes from the archive behind the session."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Header, Path, Request, Response

from service.archive.routes import ContentRequest, serve_video
from service.catalog.refresh import model_families
from service.catalog.statuses import STATUSES, TERMINAL_STATUSES
from service.console.deps import (
    Conn,
    ConsoleRoute,
    CurrentViewer,
    Viewer,
    change_form,
    page,
    see_other,
    team_of,
    team_view,
)
from service.platform.errors import InvalidRequest
from service.tasks import service as tasks
from service.tasks.operations import find_task
from service.tasks.render import render_task
from service.tasks.routes import metadata_filter
from service.tasks.schemas import encode_cursor
from service.teams.service import Caller
from service.web import shared
from service.webhooks import service as webhooks

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
TaskId = Annotated[str, Path(max_length=100)]
PAGE_SIZE = 25
# Error codes of a task that a budget or the balance refused: its page links to budgets.
MONEY_CODES = ("budget_exceeded", "insufficient_quota", "insufficient_balance", "quota_exceeded")


def _metadata(text: str) -> dict[str, str] | None:
    """`key=value` pairs, one per line or comma-separated, as the API's metadata filter."""
    pairs = []
    for part in text.replace("\n", ",").split(","):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise InvalidRequest("metadata: write key=value", param="metadata")
            pairs.append((f"metadata[{key.strip()}]", value.strip()))
    return metadata_filter(pairs)


def _until_cursor(day: str, timezone: str) -> str:
    """Tasks created on or before `day` (budget time zone): the API's cursor, placed just
    before the next day starts."""
    try:
        end = datetime.combine(date.fromisoformat(day), time(), tzinfo=ZoneInfo(timezone))
    except ValueError:
        raise InvalidRequest("until: a date, e.g. 2026-11-30", param="until") from None
    return encode_cursor(end + timedelta(days=1) - timedelta(microseconds=1), "~")


async def task_caller(viewer: Viewer, conn: Any, task_id: str) -> Caller:
    """The caller a task is read as: the team's own (another team's task is not found, by
    the same code as the API), or, for an admin, the task's team."""
    if viewer.caller is not None:
        return viewer.caller
    row = await find_task(conn, task_id=task_id)
    return await team_of(conn, row["team_id"])


def task_view(row: Any) -> dict[str, Any]:
    shown = render_task(row)
    videos = (shown.get("result") or {}).get("videos") or []
    archive = row["archive"] or []
    error = row["error"] or {}
    return {
        "row": row,
        "shown": shown,
        "terminal": row["status"] in TERMINAL_STATUSES,
        "metadata": (row["request"] or {}).get("metadata") or {},
        "request_json": orjson.dumps(row["request"], option=orjson.OPT_INDENT_2).decode(),
        "stored": any(a["idx"] == 0 and a["state"] == "stored" for a in archive),
        "archiving": any(a["state"] == "pending" for a in archive),
        "upstream_url": videos[0]["url"] if videos else None,
        "money_refusal": isinstance(error, dict) and error.get("code") in MONEY_CODES,
    }


@router.get("/console/tasks")
async def task_list(
    request: Request,
    viewer: CurrentViewer,
    conn: Conn,
    team: str | None = None,
    status: str | None = None,
    model: str | None = None,
    family: str | None = None,
    metadata: str = "",
    until: str | None = None,
    cursor: str | None = None,
) -> Response:
    view = await team_view(viewer, conn, team)
    status = status or None
    model = model or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(STATUSES)}", param="status")
    rows: list[Any] = []
    next_cursor = None
    if view.caller is not None:
        start = cursor or (
            _until_cursor(until, shared(request).settings.budget_timezone) if until else None
        )
        rows, next_cursor = await tasks.list_tasks(
            conn,
            caller=view.caller,
            status=status,
            model=model,
            limit=PAGE_SIZE,
            cursor=start,
            metadata=_metadata(metadata[:500]),
            family=(family or "")[:100] or None,
            catalog=shared(request).catalog,
        )
    filters = {
        "status": status or "",
        "model": model or "",
        "family": family or "",
        "metadata": metadata,
        "until": until or "",
    }
    next_query = {k: v for k, v in filters.items() if v} | {"cursor": next_cursor or ""}
    if view.teams and view.caller is not None:
        next_query["team"] = str(view.caller.team_id)
    families = model_families(shared(request).catalog)
    return page(
        request,
        "tasks.html",
        viewer,
        view=view,
        nav="tasks",
        tasks=[task_view(r) for r in rows],
        filters=filters,
        statuses=STATUSES,
        # The catalog in force names every model and family (retired ones too: old tasks).
        models=sorted(families),
        families=sorted(set(families.values())),
        next_query=next_query if next_cursor else None,
    )


@router.get("/console/tasks/{task_id}")
async def task_page(
    request: Request, task_id: TaskId, viewer: CurrentViewer, conn: Conn
) -> Response:
    caller = await task_caller(viewer, conn, task_id)
    row = await tasks.get_task(conn, caller=caller, task_id=task_id)
    _watch(request, row)
    deliveries = await webhooks.delivery_log(
        conn, task_id=task_id, team_id=None if viewer.admin else caller.team_id,
        with_bodies=viewer.admin,
    )  # fmt: skip
    return page(
        request,
        "task.html",
        viewer,
        nav="tasks",
        task=task_view(row),
        team_name=caller.team_name,
        deliveries=deliveries["data"],
        archive_on=shared(request).archive is not None,
    )


@router.get("/console/tasks/{task_id}/live")
async def task_live(
    request: Request, task_id: TaskId, viewer: CurrentViewer, conn: Conn
) -> Response:
    """The part of the task's page that changes, polled by htmx until the task has ended
    and its video is kept (the API's event stream takes a key, not a session)."""
    caller = await task_caller(viewer, conn, task_id)
    row = await tasks.get_task(conn, caller=caller, task_id=task_id)
    _watch(request, row)
    return page(
        request,
        "task_live.html",
        viewer,
        task=task_view(row),
        archive_on=shared(request).archive is not None,
    )


def _watch(request: Request, row: Any) -> None:
    watching = shared(request).watching
    if watching is not None and row["status"] not in TERMINAL_STATUSES:
        watching.look(row["id"])  # read at the watched pace while someone looks


@router.post("/console/tasks/{task_id}/cancel")
async def cancel(request: Request, task_id: TaskId, viewer: CurrentViewer, conn: Conn) -> Response:
    await change_form(request, viewer)
    caller = await task_caller(viewer, conn, task_id)
    await tasks.cancel_task(shared(request), caller=caller, task_id=task_id)
    return see_other(f"/console/tasks/{task_id}")


@router.get("/console/tasks/{task_id}/video")
async def video(
    request: Request,
    task_id: TaskId,
    viewer: CurrentViewer,
    range_header: Annotated[str | None, Header(alias="Range", max_length=100)] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=200)] = None,
) -> Response:
    """The kept video, as GET /v1/tasks/{id}/content serves it (Range included)."""
    res = shared(request)
    async with res.pool.acquire() as conn:  # given back before the bytes stream
        caller = await task_caller(viewer, conn, task_id)
    content = ContentRequest(res.archive, res.pool, res.settings)
    return await serve_video(content, caller, task_id, 0, range_header, if_none_match)
