"""Signing in (a team key, or the admin token and a name for the audit trail) and out."""

from __future__ import annotations

import hmac
import re
import secrets

from fastapi import APIRouter, Request, Response

from service.console.deps import (
    ConsoleRoute,
    CsrfRefused,
    CurrentViewer,
    change_form,
    page,
    read_form,
    see_other,
    session_store,
)
from service.console.sessions import COOKIE, COOKIE_PATH, SessionData, token_hash
from service.platform.errors import Unauthorized
from service.teams.service import KEY_PREFIX, authenticate, hash_key
from service.web import shared

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
_ACTOR = re.compile(r"^[\w .@+-]{1,60}$")
MAX_SECRET_CHARS = 512


def _safe_next(target: str | None) -> str:
    """Only a console page of this site: never elsewhere after signing in."""
    if not target or not target.startswith("/console/") or target.startswith("/console//"):
        return "/console/tasks"
    return "/console/tasks" if any(c in target for c in "\\\r\n") else target


def _secure(request: Request) -> bool:
    base = shared(request).settings.public_base_url or ""
    return request.url.scheme == "https" or base.startswith("https://")


@router.get("/console")
@router.get("/console/")
async def console_home() -> Response:
    return see_other("/console/tasks")


SIGN_IN_COOKIE = "qgw_console_sign_in"
SIGN_IN_PATH = "/console/sign-in"


@router.get("/console/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    """The form, with a token also set in a SameSite=Strict cookie: a sign-in posted from
    another site carries no cookie and is refused (no one is signed in to someone else's
    team behind their back)."""
    token = secrets.token_urlsafe(32)
    answer = page(request, "sign_in.html", None, next=_safe_next(next), error=None, token=token)
    answer.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path=SIGN_IN_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return answer


@router.post("/console/sign-in")
async def sign_in(request: Request) -> Response:
    """A team key signs in as its team; the admin token (with a name for the audit trail)
    as an admin. Neither is kept: the session holds its hash."""
    form = await read_form(request)  # bounded: nobody is known yet
    token = request.cookies.get(SIGN_IN_COOKIE) or ""
    given = str(form.get("token") or "")
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise CsrfRefused("the sign-in form is stale or was posted from elsewhere: reload it")
    secret = str(form.get("secret") or "").strip()[:MAX_SECRET_CHARS]
    name = str(form.get("name") or "").strip()
    target = _safe_next(str(form.get("next") or ""))
    res = shared(request)
    admin_token = res.settings.admin_token.get_secret_value()
    data: SessionData | None = None
    error = "That key or token is not valid (or the key was revoked or has expired)."
    csrf = secrets.token_urlsafe(32)
    if secret.startswith(KEY_PREFIX):
        try:
            await authenticate(res.pool, token=secret, keys=res.keys)
            data = SessionData(csrf=csrf, key_hash=hash_key(secret).hex())
        except Unauthorized:
            data = None
    elif admin_token and secret and hmac.compare_digest(secret.encode(), admin_token.encode()):
        if not _ACTOR.match(name):
            error = "Signing in as an admin needs your name (for the audit trail)."
        else:
            data = SessionData(csrf=csrf, admin_hash=token_hash(admin_token), actor=name)
    if data is None:
        return page(
            request, "sign_in.html", None, status=401, next=target, error=error, token=token
        )
    cookie = await (await session_store(request)).create(data)
    answer = see_other(target)
    answer.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN_PATH)
    answer.set_cookie(
        COOKIE,
        cookie,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return answer


@router.post("/console/sign-out")
async def sign_out(request: Request, viewer: CurrentViewer) -> Response:
    await change_form(request, viewer)
    await (await session_store(request)).end(viewer.session_id)
    answer = see_other("/console/sign-in")
    answer.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
    )
    return answer
