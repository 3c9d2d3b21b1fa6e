"""What every console page shares: who is looking (the session, checked before anything
else, a body included), which team's view, the CSRF check of a change, the templates, and
errors as pages."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote
from uuid import UUID

import asyncpg
from fastapi import Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, UploadFile

from service.catalog.generations import DEFAULT_ANSWER_VERSION
from service.console.sessions import (
    COOKIE,
    SessionData,
    SessionStore,
    shared_secret,
    token_hash,
)
from service.platform.bodies import read_body
from service.platform.errors import InvalidRequest, NotFound, ServiceError, Unauthorized
from service.teams import service as teams
from service.teams.service import Caller, authenticate_hash
from service.web import shared

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")  # autoescapes
# An admin's view of a team is a caller with no key of its own (it never submits).
NO_KEY = UUID(int=0)
MAX_FORM_FIELDS = 100
# The largest console form is a budget or team edit: a few hundred bytes.
MAX_FORM_BYTES = 16 * 1024


class SignInFirst(Exception):
    """No live session: the page sends the browser to sign in."""


class CsrfRefused(ServiceError):
    status = 403
    code = "csrf_refused"


@dataclass(frozen=True)
class Viewer:
    """Who is looking: a team (its caller, from its key) or an admin (every team)."""

    session_id: str
    session: SessionData
    caller: Caller | None

    @property
    def admin(self) -> bool:
        return self.session.admin

    @property
    def csrf(self) -> str:
        return self.session.csrf


async def session_store(request: Request) -> SessionStore:
    res = shared(request)
    prefix = f"{res.settings.arq_queue_name}:console-session"
    secret = request.app.state.console_secret  # QGW_CONSOLE_SECRET
    return SessionStore(
        res.redis,
        prefix=prefix,
        secret=secret
        if secret is not None
        else await shared_secret(res.redis, res.settings.arq_queue_name),
        idle_seconds=res.settings.console_idle_minutes * 60,
    )


async def console_viewer(request: Request) -> Viewer:
    """The session's viewer, or SignInFirst. Route handlers declare no body parameters, so
    FastAPI reads no body before this has run."""
    store = await session_store(request)
    loaded = await store.load(request.cookies.get(COOKIE))
    if loaded is None:
        raise SignInFirst
    session_id, data = loaded
    res = shared(request)
    caller = None
    if data.admin:
        expected = res.settings.admin_token.get_secret_value()
        if not expected or not hmac.compare_digest(token_hash(expected), data.admin_hash or ""):
            await store.end(session_id)  # the admin token changed or was turned off
            raise SignInFirst
    else:
        try:
            caller = await authenticate_hash(
                res.pool, key_hash=bytes.fromhex(data.key_hash or ""), keys=res.keys
            )
        except Unauthorized:
            await store.end(session_id)  # the key was revoked or expired
            raise SignInFirst from None
    return Viewer(session_id, data, caller)


CurrentViewer = Annotated[Viewer, Depends(console_viewer)]


async def console_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with shared(request).pool.acquire() as conn:
        yield conn


Conn = Annotated[asyncpg.Connection, Depends(console_connection)]


async def read_form(request: Request) -> FormData:
    """A console form (url-encoded, no files): at most MAX_FORM_BYTES, read with the
    gateway's body deadline, so the sign-in form, read before anyone is known, costs no
    more than a few KiB and cannot hold a connection open for ever."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidRequest("the console's forms are application/x-www-form-urlencoded")
    timeout = shared(request).settings.body_read_timeout_seconds
    body = await read_body(request, max_bytes=MAX_FORM_BYTES, timeout=timeout)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form is not valid UTF-8 url-encoded text") from None
    fields: list[tuple[str, str | UploadFile]] = list(pairs)
    return FormData(fields)


async def change_form(request: Request, viewer: Viewer) -> FormData:
    """The body of a change, read only now that the session is known, with its CSRF token
    checked (403 otherwise)."""
    form = await read_form(request)
    given = form.get("csrf")
    if not isinstance(given, str) or not hmac.compare_digest(given, viewer.csrf):
        raise CsrfRefused("the form's CSRF token is missing or stale: reload the page")
    return form


def require_admin_view(viewer: Viewer) -> None:
    if not viewer.admin:  # a team is not told which pages only admins have
        raise NotFound("page not found")


@dataclass
class TeamView:
    """The team a page shows: the viewer's own, or the one an admin chose (`?team=`)."""

    caller: Caller | None
    teams: list[Any] = field(default_factory=list)  # an admin's choice of teams

    @property
    def team_id(self) -> UUID | None:
        return self.caller.team_id if self.caller else None

    @property
    def query(self) -> str:
        """What keeps an admin on the team across links (`?team=`)."""
        if not self.teams or self.caller is None:
            return ""
        return "?team=" + quote(str(self.caller.team_id))


def parse_id(text: str, param: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidRequest(f"{param}: not an id", param=param) from None


def viewing_caller(team: Any) -> Caller:
    return Caller(
        key_id=NO_KEY,
        team_id=team["id"],
        team_name=team["name"],
        rpm_limit=team["rpm_limit"],
        max_concurrent_tasks=team["max_concurrent_tasks"],
        allowed_models=team["allowed_models"],
        api_version=team["api_version"] or DEFAULT_ANSWER_VERSION,
    )


async def team_view(viewer: Viewer, conn: asyncpg.Connection, team: str | None) -> TeamView:
    if viewer.caller is not None:
        return TeamView(viewer.caller)
    rows = await teams.list_teams(conn)
    chosen = next((r for r in rows if str(r["id"]) == team), rows[0] if rows else None)
    return TeamView(viewing_caller(chosen) if chosen else None, rows)


async def team_of(conn: asyncpg.Connection, team_id: UUID) -> Caller:
    return viewing_caller(await teams.get_team(conn, team_id=team_id))


def page(
    request: Request,
    name: str,
    viewer: Viewer | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    context.setdefault("view", None)
    return templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, "grafana_url": shared(request).settings.grafana_url, **context},
        status_code=status,
        headers={**PAGE_HEADERS, **(headers or {})},
    )


# Pages name their own scripts, styles and media only: a value a team typed that slipped
# past escaping still could not run, and no other site may frame a page (clickjacking).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class ConsoleRoute(APIRoute):
    """Errors as pages (not Qingbo's JSON envelope), and no session: sign in first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInFirst:
                wanted = request.url.path
                if request.method == "GET" and request.url.query:
                    wanted += "?" + request.url.query
                target = "/console/sign-in?next=" + quote(wanted, safe="")
                if request.headers.get("HX-Request"):  # htmx follows this header
                    return Response(status_code=200, headers={"HX-Redirect": target})
                return see_other(target)
            except ServiceError as exc:
                return page(
                    request,
                    "error.html",
                    None,
                    status=exc.status,
                    headers=exc.headers,
                    message=exc.message,
                    code=exc.code,
                    http_status=exc.status,
                )

        return route
