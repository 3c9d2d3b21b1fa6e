"""Signing in to the console over HTTP, as a browser does (a form, then the cookie)."""

from __future__ import annotations

import re

import httpx

from tests.conftest import ADMIN_TOKEN

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


_TOKEN = re.compile(r'name="token" value="([^"]+)"')


async def sign_in(
    client: httpx.AsyncClient, secret: str, name: str = "", next: str = "/console/tasks"
) -> httpx.Response:
    form = await client.get("/console/sign-in")
    match = _TOKEN.search(form.text)
    assert match is not None
    return await client.post(
        "/console/sign-in",
        data={"secret": secret, "name": name, "next": next, "token": match.group(1)},
    )


async def signed_in(client: httpx.AsyncClient, secret: str, name: str = "") -> str:
    """Sign in; the CSRF token the pages carry."""
    answer = await sign_in(client, secret, name)
    assert answer.status_code == 303, answer.text
    return await csrf_of(client)


async def admin_signed_in(client: httpx.AsyncClient, name: str = "Ada Admin") -> str:
    return await signed_in(client, ADMIN_TOKEN, name)


async def csrf_of(client: httpx.AsyncClient, path: str = "/console/tasks") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    match = _CSRF.search(page.text)
    assert match is not None
    return match.group(1)
