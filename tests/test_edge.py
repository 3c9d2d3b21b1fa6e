"""The edge of the API over a real socket: a chunked body over the limit is a 413 like a
declared one (issue 15, point 12), a tampered list cursor is a 400, and numbers in headers
and queries are ASCII digits or refused or ignored, never a 500 (issue 31, point 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.factories import ADMIN, make_team, task_body


async def test_a_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, live_url: str, res: Any
) -> None:
    team = await make_team(client)
    limit = res.settings.max_request_bytes

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"model": "minimax-hailuo-2.3", "prompt": "'
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{live_url}/v1/tasks",
            content=chunks(),
            headers={**team.headers, "Content-Type": "application/json"},
        )
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["error"]["code"] == "payload_too_large"


async def test_a_tampered_cursor_is_400(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    for cursor in ("not-base64!!", "AAAA", "eHx5", "MjAyNi0xMy0wMXx0YXNr"):
        answer = await client.get("/v1/tasks", params={"cursor": cursor}, headers=team.headers)
        assert answer.status_code == 400, (cursor, answer.text)
        assert answer.json()["error"]["param"] == "cursor"


# "²" passes str.isdigit() and int() refuses it; "٣" passes and int() reads it as 3. Header
# values arrive as Latin-1 (Starlette decodes them so), so "²" and "¹" reach a header.
NOT_ASCII_DIGITS = ["²", "¹", "1.5", "-1", "30s"]


@pytest.mark.parametrize("wait", NOT_ASCII_DIGITS)
async def test_prefer_wait_takes_ascii_seconds_or_is_a_400(
    client: httpx.AsyncClient, wait: str
) -> None:
    team = await make_team(client)
    answer = await client.post(
        "/v1/tasks",
        json=task_body(),
        headers={**team.headers, "Prefer": f"wait={wait}".encode("latin-1")},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "Prefer"
    listed = await client.get("/v1/tasks", headers=team.headers)
    assert listed.json()["data"] == []  # refused before anything was stored


async def test_a_huge_prefer_wait_is_capped(client: httpx.AsyncClient, res: Any) -> None:
    team = await make_team(client)
    answer = await client.post(
        "/v1/tasks", json=task_body(), headers={**team.headers, "Prefer": "wait=" + "9" * 5000}
    )
    assert answer.status_code == 200, answer.text
    limit = int(res.settings.sync_max_wait_seconds)
    assert answer.headers["Preference-Applied"] == f"wait={limit}"


@pytest.mark.parametrize("last_event_id", NOT_ASCII_DIGITS)
async def test_a_last_event_id_it_never_sent_is_ignored(
    client: httpx.AsyncClient, live_url: str, last_event_id: str
) -> None:
    """The stream starts from the task as it is, as without the header."""
    team = await make_team(client)
    task = (await client.post("/v1/tasks", json=task_body(), headers=team.headers)).json()
    headers = {**team.headers, "Last-Event-ID": last_event_id.encode("latin-1")}
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(
            http, "GET", f"{live_url}/v1/tasks/{task['task_id']}/events", headers=headers
        ) as sse,
    ):
        assert sse.response.status_code == 200
        first = await anext(sse.aiter_sse())
    assert first.event == "queued" and first.id == "0"


@pytest.mark.parametrize("cursor", [*NOT_ASCII_DIGITS, "٣", "9" * 40])
async def test_an_audit_cursor_it_never_sent_is_a_400(
    client: httpx.AsyncClient, cursor: str
) -> None:
    answer = await client.get("/admin/audit", params={"cursor": cursor}, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "cursor"
