"""How Qingbo's answers are read: which errors fail, retry, pause, or are ambiguous."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.tasks import submission
from service.tasks.resources import Resources
from service.upstream.client import (
    QingboClient,
    build_http_client,
    build_read_client,
    classify,
)
from service.upstream.errors import (
    UpstreamAccountBlocked,
    UpstreamRejected,
    UpstreamRetryable,
)
from tests.factories import claim, make_team, metric, row, submit


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": f"m{status}", "code": f"c{status}"}}, headers=headers
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, UpstreamRejected),
        (404, UpstreamRejected),
        (401, UpstreamAccountBlocked),
        (402, UpstreamAccountBlocked),
        (429, UpstreamRetryable),
        (500, UpstreamRetryable),
        (503, UpstreamRetryable),
    ],
)
def test_classification(status: int, kind: type) -> None:
    error = classify(answer(status))
    assert isinstance(error, kind)
    assert (error.status, error.message, error.code) == (status, f"m{status}", f"c{status}")


def test_retry_after_is_read() -> None:
    error = classify(answer(429, {"Retry-After": "7"}))
    assert isinstance(error, UpstreamRetryable) and error.retry_after == 7.0
    assert classify(httpx.Response(200, json={})) is None


class DroppingServer:
    """A real socket server that reads each request whole (headers and body), then closes
    the connection without a byte of answer, the first `drops` times (`reset`: with an RST
    rather than a FIN); after that it answers as Qingbo would, with a task id."""

    def __init__(self, *, drops: int, reset: bool) -> None:
        self.drops = drops
        self.reset = reset
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (f.partition(":") for f in fields if f)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((line, headers, body))
                if len(self.requests) <= self.drops:  # read whole, and never answered
                    if self.reset:
                        writer.transport.abort()
                    else:
                        writer.close()
                    return
                answer = json.dumps({"task_id": "qb-task-1", "status": "queued", "progress": 0})
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(answer)}\r\n\r\n{answer}".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def keys(self) -> list[str | None]:
        return [headers.get("idempotency-key") for _, headers, _ in self.requests]


@contextlib.asynccontextmanager
async def through(res: Resources, url: str, **settings: Any) -> AsyncIterator[Resources]:
    """The gateway's resources with its real submission client pointed at `url`."""
    async with build_http_client(timeout=5, connect_timeout=1) as http:
        qingbo = QingboClient(http, base_url=url, api_key="sk-test")
        yield dataclasses.replace(
            res, qingbo=qingbo, settings=res.settings.model_copy(update=settings)
        )


DROPS = pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])


@DROPS
async def test_a_submission_dropped_after_it_was_sent_is_resent_with_the_same_key_under_2026_09(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, reset: bool
) -> None:
    """Issue 31 point 12: a connection dropped once the whole request was written is an
    unknown outcome, never "not sent": resent with the same Idempotency-Key, so Qingbo
    answers with the task it made on the first, if it made one (billed once)."""
    team = await make_team(client)
    task_id = (await submit(client, team))["task_id"]
    async with (
        DroppingServer(drops=1, reset=reset) as server,
        through(res, server.url, qingbo_api_version="2026-09") as current,
    ):
        dropped = await submission.submit(current, task_id, await claim(res, db, task_id))
        assert dropped == "ambiguous_idempotent_resubmit"  # not "retry": maybe sent
        assert (await row(db, task_id))["ambiguous_resends"] == 1
        resent = await submission.submit(current, task_id, await claim(res, db, task_id))
        assert resent == "submitted"
    assert [line for line, _, _ in server.requests] == ["POST /v1/tasks HTTP/1.1"] * 2
    assert server.keys() == [f"qgw-{task_id}"] * 2  # the same key on both
    first, again = (json.loads(body) for _, _, body in server.requests)
    # The same task asked for, with the same callback URL: Qingbo answers the resend with
    # the task it made first, which calls back with the first attempt's token.
    assert f"/internal/qingbo/callback/{task_id}?token=" in first["callback_url"]
    assert first == again
    assert (await row(db, task_id))["upstream_task_id"] == "qb-task-1"


@DROPS
@pytest.mark.parametrize("policy", ["fail", "resubmit"])
async def test_a_submission_dropped_after_it_was_sent_follows_the_ambiguity_policy_under_2026_04(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, reset: bool, policy: str
) -> None:
    """Without an upstream key the same drop is the one ambiguous case: the configured
    policy decides (fail and refund, or a bounded, counted blind resend), never the
    "not sent" retry that would pay twice without anyone knowing."""
    team = await make_team(client)
    task_id = (await submit(client, team))["task_id"]
    before = metric("qgw_upstream_ambiguous_submissions_total", policy=policy)
    async with (
        DroppingServer(drops=1, reset=reset) as server,
        through(
            res, server.url, qingbo_api_version="2026-04", ambiguous_submit_policy=policy
        ) as old,
    ):
        dropped = await submission.submit(old, task_id, await claim(res, db, task_id))
        assert dropped == f"ambiguous_{policy}"
        assert metric("qgw_upstream_ambiguous_submissions_total", policy=policy) == before + 1
        task = await row(db, task_id)
        if policy == "fail":
            assert task["status"] == "failed" and task["dispatch_state"] == "done"
            assert task["error"]["code"] == "upstream_ambiguous"
        else:
            assert task["ambiguous_resends"] == 1  # counted against its bound
            resent = await submission.submit(old, task_id, await claim(res, db, task_id))
            assert resent == "submitted"
    assert server.keys() == [None] * (1 if policy == "fail" else 2)  # no key in 2026-04


async def test_why_submissions_keep_httpcore_the_read_client_calls_that_drop_not_sent() -> None:
    """The reason for two transports (service/platform/http_client.py): over aiohttp's pool the same
    drop reads as "not sent", safe for a read, a second bill for a submission. If this
    fails, aiohttp's transport tells the two apart now and the split can be reconsidered."""
    async with (
        DroppingServer(drops=1, reset=False) as server,
        build_read_client(timeout=5, connect_timeout=1) as reads,
    ):
        with pytest.raises(UpstreamRetryable, match="unreachable"):
            await QingboClient(reads, base_url=server.url, api_key="sk").create_task({"a": 1})
    assert len(server.requests) == 1  # it was sent, whole
