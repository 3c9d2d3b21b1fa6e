"""`GET /v1/tasks/{id}/content[/{index}]`: the gateway's kept copy of a result video.

No database connection is held while the bytes stream: the row is read, the connection
given back, then the store is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import obstore
from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from service.archive.copier import Archiver
from service.archive.service import etag_of, matches, parse_range, stored_video
from service.archive.store import can_sign
from service.platform.errors import (
    ArchiveExpired,
    ArchiveGone,
    InvalidRequest,
    NotArchived,
    NotFound,
    RangeNotSatisfiable,
    Unauthorized,
)
from service.platform.openapi import error_responses
from service.platform.types import Storable
from service.teams.auth import CurrentCaller
from service.web import AppSettings, DbPool, shared

router = APIRouter(tags=["archive"])
TaskId = Annotated[str, Path(max_length=100), Storable]
SIGNED_URL_SECONDS = 300
CONTENT_ERRORS = (
    InvalidRequest,
    Unauthorized,
    NotFound,
    NotArchived,
    ArchiveGone,
    ArchiveExpired,
)


async def get_archiver(request: Request) -> Archiver | None:
    archiver: Archiver | None = shared(request).archive
    return archiver


Archive = Annotated[Archiver | None, Depends(get_archiver)]


@dataclass
class ContentRequest:
    """What the content routes read the kept copy with."""

    archiver: Archiver | None
    pool: DbPool
    settings: AppSettings


async def content_request(archiver: Archive, pool: DbPool, settings: AppSettings) -> ContentRequest:
    return ContentRequest(archiver, pool, settings)


Content = Annotated[ContentRequest, Depends(content_request)]


async def _content(
    res: ContentRequest,
    caller: CurrentCaller,
    task_id: str,
    index: int,
    range_header: str | None,
    if_none_match: str | None,
    *,
    head: bool = False,
) -> Response:
    if res.archiver is None:
        raise NotArchived("archiving is off on this gateway (QGW_ARCHIVE_URL is not set)")
    async with res.pool.acquire() as conn:
        row = await stored_video(conn, caller=caller, task_id=task_id, index=index)
    etag = etag_of(row)
    common = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=common)
    store = res.archiver.store
    if res.settings.archive_redirect and can_sign(store):
        signed = await obstore.sign_async(
            store, "GET", row["object_key"], timedelta(seconds=SIGNED_URL_SECONDS)
        )
        return RedirectResponse(signed, status_code=307, headers={"ETag": etag})
    size = int(row["bytes"])
    wanted = parse_range(range_header, size)
    options: dict[str, Any] = {}
    headers = {**common, "Content-Length": str(size)}
    status = 200
    if wanted is not None:
        options["range"] = (wanted.start, wanted.end)
        status = 206
        headers["Content-Length"] = str(wanted.length)
        headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end - 1}/{size}"
    if size == 0 or head:
        # HEAD: what a GET would answer, without reading the store.
        return Response(status_code=status, headers=headers, media_type=row["content_type"])
    got = await obstore.get_async(store, row["object_key"], options=options)  # type: ignore[arg-type]

    async def body() -> Any:
        async for chunk in got.stream(min_chunk_size=256 * 1024):
            yield bytes(chunk)

    return StreamingResponse(
        body(), status_code=status, headers=headers, media_type=row["content_type"]
    )


# The console (service/console) serves the same bytes behind its session.
serve_video = _content

_VIDEO = {"content": {"video/mp4": {}}, "description": "The video's bytes"}
CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _VIDEO,
    206: _VIDEO,
    304: {"description": "Not modified"},
    307: {"description": "A short-lived signed URL of the store"},
    **error_responses(*CONTENT_ERRORS, RangeNotSatisfiable),
}


@router.get(
    "/v1/tasks/{task_id}/content",
    summary="The task's first video, from the archive",
    response_class=Response,
    responses=CONTENT_RESPONSES,
)
@router.head(
    "/v1/tasks/{task_id}/content",
    summary="The headers of the task's first video (size, ETag), without its bytes",
    response_class=Response,
    responses=CONTENT_RESPONSES,
)
async def first_video(
    request: Request,
    task_id: TaskId,
    res: Content,
    caller: CurrentCaller,
    range_header: Annotated[str | None, Header(alias="Range"), Storable] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match"), Storable] = None,
) -> Response:
    """The kept copy of the task's first video: `Range` (206) and `If-None-Match` (304)
    work; 404 `not_archived` with `Retry-After` until it is stored, 410 after a failure."""
    head = request.method == "HEAD"
    return await _content(res, caller, task_id, 0, range_header, if_none_match, head=head)


@router.get(
    "/v1/tasks/{task_id}/content/{index}",
    summary="One of the task's videos, from the archive",
    response_class=Response,
    responses=CONTENT_RESPONSES,
)
@router.head(
    "/v1/tasks/{task_id}/content/{index}",
    summary="The headers of one of the task's videos, without its bytes",
    response_class=Response,
    responses=CONTENT_RESPONSES,
)
async def video(
    request: Request,
    task_id: TaskId,
    index: Annotated[int, Path(ge=0, le=99)],
    res: Content,
    caller: CurrentCaller,
    range_header: Annotated[str | None, Header(alias="Range"), Storable] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match"), Storable] = None,
) -> Response:
    """The kept copy of video `index` (from 0) of the task, as `/content`."""
    head = request.method == "HEAD"
    return await _content(res, caller, task_id, index, range_header, if_none_match, head=head)
