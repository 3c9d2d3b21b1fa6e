"""The edge of the API over a real socket: a chunked body over the limit is a 413 like a
declared one (issue 15, point 12), and a tampered list cursor is a 400."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.factories import make_team


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
