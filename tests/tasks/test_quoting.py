"""Quote before admission (service/tasks/quoting.py): a task priced on input media the vendor
measures reserves the vendor's quote, never above the catalog's bound; a quote that fails
keeps the bound; a refused quote refuses the task before anything is stored or reserved;
`off` and the 2026-04 generation keep the bound.

The simulator (real process, over HTTP) answers `POST /waveapi/quote` from its own catalog,
and has no control for a given file's length: it is "told" the reference video is 4 s by a
catalog (PUT /_sim/catalog) whose `media.max_video_seconds` for the model is 4, so its
quote, and its charge, are for a 4 s video. What the simulator cannot answer (a quote that
never comes, an unreadable video's `input_video_duration_unknown`, an odd answer) comes
from a real socket here.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from service.catalog.engine import shipped_catalog
from service.catalog.intake import normalize_task, price_micros
from service.catalog.schemas import TaskRequest
from service.config import Settings
from service.platform.db import OnDemandConnection
from service.platform.db import create_pool as create_db_pool
from service.platform.errors import BudgetExceeded, InvalidRequest, RateLimited, ServiceError
from service.platform.money import MICROS_PER_QUOTA, parse_usd
from service.tasks import quoting
from service.tasks.resources import Resources, open_resources
from service.tasks.service import Admission, admit_task
from service.teams.service import authenticate
from service.upstream.quote import NoQuote, QuoteClient, Quoted, QuoteRefusal, read_answer
from tests.factories import (
    ADMIN,
    TeamKey,
    drive_to_end,
    make_team,
    metric,
    row,
    sim_tasks,
    task_body,
    until,
    variant,
)

MODEL = "minimax-h3"
# 768p, 5 s out: 0.36 USD; the reference video's input seconds at 0.072 USD each, assumed
# 15 s (the page's ceiling): the bound is 1.44 USD. Told 4 s: 0.36 + 0.288 = 0.648 USD.
BOUND = 1_440_000
QUOTED_4_S = 648_000
VIDEO = "https://media.example/reference-clip.mp4"


def media_body(**overrides: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": "the same dancer, in the rain",
        "duration": 5,
        "resolution": "768p",
        "video_urls": [VIDEO],
        **overrides,
    }


def quotes_asked() -> float:
    """Every quote counted, whatever its outcome."""
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "qgw_admission_quotes"
        for s in m.samples
        if s.name == "qgw_admission_quotes_total"
    )


def outcome(name: str) -> float:
    return metric("qgw_admission_quotes_total", outcome=name)


async def admit(
    res: Resources, team: TeamKey, body: dict[str, Any], *, key: str | None = None
) -> Admission:
    caller = await authenticate(res.pool, token=team.key)
    async with OnDemandConnection(res.pool) as lease:
        return await admit_task(
            res, lease, caller=caller, body=TaskRequest.model_validate(body), idempotency_key=key
        )


@pytest.fixture
async def current(res: Resources, sim: httpx.AsyncClient) -> Resources:
    """The gateway and the simulator speaking 2026-09 (the catalog's generation), whatever
    generation the suite runs under."""
    (await sim.put("/_sim/config", json={"api_version": "2026-09"})).raise_for_status()
    return variant(res, qingbo_api_version="2026-09")


async def tell_video_seconds(sim: httpx.AsyncClient, seconds: int) -> None:
    """The simulator's catalog with MODEL's reference video held at `seconds`: its quote and
    its charge are for a video that long (it has no per-file length control)."""
    document = copy.deepcopy(shipped_catalog().document)
    document["models"][MODEL]["media"]["max_video_seconds"] = seconds
    answer = await sim.put("/_sim/catalog", json=document)
    assert answer.status_code == 200, answer.text


@dataclass
class Socket:
    """A real HTTP endpoint on 127.0.0.1 for the gateway's quote."""

    url: str
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0


def http_answer(status: int, body: Any) -> bytes:
    raw = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} Answer\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + raw


@asynccontextmanager
async def quote_socket(answer: bytes | None) -> AsyncIterator[Socket]:
    """Answers every quote with `answer` (a whole HTTP response); with None, takes the
    connection and the request and never answers."""
    stop = asyncio.Event()
    endpoint = Socket(url="")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        endpoint.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            endpoint.bodies.append(await reader.readexactly(length))
            if answer is None:
                await stop.wait()
            else:
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint.url = f"http://127.0.0.1:{port}/waveapi/quote"
    try:
        yield endpoint
    finally:
        stop.set()
        server.close()
        await server.wait_closed()


async def nothing_stored(db: asyncpg.Connection, sim: httpx.AsyncClient) -> None:
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    assert await db.fetchval("SELECT count(*) FROM budget_ledger") == 0
    assert await sim_tasks(sim) == []


async def test_a_task_priced_on_its_reference_video_reserves_the_quote(
    client: httpx.AsyncClient,
    current: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
) -> None:
    """Told the video is 4 s, the simulator quotes 0.648 USD: the task reserves that, not
    the 1.44 USD bound, and a team with 1.00 USD left is not refused a task that fits."""
    await tell_video_seconds(sim, 4)
    team = await make_team(client)
    budget = await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "total", "limit_usd": "1.00"}]},
        headers=ADMIN,
    )
    assert budget.status_code == 200, budget.text
    quoted = outcome("quoted")
    with pytest.raises(BudgetExceeded):  # what the bound alone would do
        await admit(variant(current, quote_before_admission="off"), team, media_body())

    admitted = await admit(current, team, media_body())

    assert admitted.row["cost_micros"] == QUOTED_4_S < BOUND
    assert outcome("quoted") == quoted + 1
    reserved = await db.fetchval(
        "SELECT sum(amount_micros) FROM budget_ledger WHERE task_id = $1 AND kind = 'reserve'",
        admitted.row["id"],
    )
    assert reserved == QUOTED_4_S


async def test_the_gateway_api_reserves_the_quote_over_http(
    client_for: Any, sim: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Through POST /v1/tasks of a gateway speaking 2026-09 (its default settings: `media`,
    the quote at QGW_QINGBO_BASE_URL/waveapi/quote, the simulator)."""
    (await sim.put("/_sim/config", json={"api_version": "2026-09"})).raise_for_status()
    await tell_video_seconds(sim, 4)
    async with client_for("2026-09") as http:
        team = await make_team(http)
        answer = await http.post("/v1/tasks", json=media_body(), headers=team.headers)
        assert answer.status_code == 200, answer.text
    assert (await row(db, answer.json()["task_id"]))["cost_micros"] == QUOTED_4_S


@pytest.mark.parametrize(
    ("charged_quota", "charged_micros", "disputed"),
    [
        (486_000, 972_000, False),  # above the quote, within the cap: Qingbo's cost
        (900_000, 1_296_000, True),  # beyond 2x the quote: the cap, the rest disputed
    ],
)
async def test_a_quoted_reservation_below_the_final_cost_settles_at_qingbos_cost_up_to_the_cap(
    client: httpx.AsyncClient,
    current: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    charged_quota: int,
    charged_micros: int,
    disputed: bool,
) -> None:
    await tell_video_seconds(sim, 4)
    team = await make_team(client)
    budget = await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "total", "limit_usd": "5.00"}]},
        headers=ADMIN,
    )
    assert budget.status_code == 200, budget.text
    admitted = await admit(current, team, media_body())
    task_id = admitted.row["id"]
    assert admitted.row["cost_micros"] == QUOTED_4_S < charged_quota * MICROS_PER_QUOTA
    await sim.put("/_sim/config", json={"terminal_patch": {"cost": charged_quota}})

    assert await drive_to_end(current, db, task_id) == "completed"

    assert (await row(db, task_id))["charged_micros"] == charged_micros
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    (spend,) = [b for b in usage["budgets"] if b["scope"] == "team"]
    assert parse_usd(spend["spent_usd"]) == charged_micros
    assert parse_usd(spend["reserved_usd"]) == 0
    listed = (await client.get("/admin/disputes?status=open", headers=ADMIN)).json()
    found = [d for d in listed["disputes"] if d["task_id"] == task_id]
    assert bool(found) == disputed


async def test_a_quote_that_never_answers_falls_back_to_the_bound(
    client: httpx.AsyncClient, current: Resources
) -> None:
    team = await make_team(client)
    timeouts = outcome("timeout")
    async with quote_socket(None) as silent:
        slow = variant(current, quote_url=silent.url, quote_timeout_seconds=0.3)
        admitted = await admit(slow, team, media_body())
        assert silent.connections == 1 and json.loads(silent.bodies[0])["video_urls"] == [VIDEO]
    assert admitted.row["cost_micros"] == BOUND
    assert outcome("timeout") == timeouts + 1


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (http_answer(200, {"code": 0, "data": {"total_usd": "NaN"}}), "bad_answer"),
        (http_answer(200, {"code": 0, "data": {"total_usd": "-0.5"}}), "bad_answer"),
        (http_answer(200, {"code": 0, "data": {"total_usd": "2.00"}}), "above_bound"),
        (http_answer(503, {"code": 503, "message": "busy"}), "http_error"),
        (http_answer(400, {"code": 400, "errorKey": "invalid_request"}), "declined"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n[[[[[", "bad_answer"),
    ],
)
async def test_an_odd_answer_or_a_passing_refusal_keeps_the_bound(
    client: httpx.AsyncClient, current: Resources, answer: bytes, why: str
) -> None:
    team = await make_team(client)
    before = outcome(why)
    async with quote_socket(answer) as odd:
        admitted = await admit(variant(current, quote_url=odd.url), team, media_body())
    assert admitted.row["cost_micros"] == BOUND
    assert outcome(why) == before + 1


async def test_a_refused_quote_refuses_the_task_with_the_vendors_code_before_money_moves(
    client: httpx.AsyncClient,
    current: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
) -> None:
    team = await make_team(client)
    unreadable = http_answer(
        400,
        {
            "code": 400,
            "errorKey": "input_video_duration_unknown",
            "message": "the length of the input video cannot be read",
        },
    )
    refused = outcome("refused")
    async with quote_socket(unreadable) as vendor:
        with pytest.raises(ServiceError) as caught:
            await admit(variant(current, quote_url=vendor.url), team, media_body())
    error = caught.value
    assert error.status == 400 and error.code == "input_video_duration_unknown"
    assert error.envelope()["error"]["param"] == "video_urls"
    assert error.envelope()["error"]["code"] == "input_video_duration_unknown"
    assert "cannot be read" in error.message
    assert outcome("refused") == refused + 1
    await nothing_stored(db, sim)


async def test_the_simulators_refusal_reaches_the_app_in_the_gateways_envelope(
    client_for: Any, sim: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The simulator's quote refuses a tier its catalog does not price (price_not_configured,
    one of Qingbo's permanent codes): POST /v1/tasks answers 400 with that code, naming the
    field, and nothing is stored, reserved or sent."""
    (await sim.put("/_sim/config", json={"api_version": "2026-09"})).raise_for_status()
    document = copy.deepcopy(shipped_catalog().document)
    del document["models"][MODEL]["pricing"]["input_video"]["rates"]["768p"]
    (await sim.put("/_sim/catalog", json=document)).raise_for_status()
    async with client_for("2026-09") as http:
        team = await make_team(http)
        answer = await http.post("/v1/tasks", json=media_body(), headers=team.headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "price_not_configured" and error["param"] == "resolution"
    await nothing_stored(db, sim)


async def test_off_keeps_the_bound_and_asks_nothing(
    client: httpx.AsyncClient, current: Resources, sim: httpx.AsyncClient
) -> None:
    await tell_video_seconds(sim, 4)
    team = await make_team(client)
    asked = quotes_asked()
    async with quote_socket(http_answer(200, {"code": 0, "data": {"total_usd": "0.01"}})) as q:
        off = variant(current, quote_before_admission="off", quote_url=q.url)
        admitted = await admit(off, team, media_body())
        assert q.connections == 0
    assert admitted.row["cost_micros"] == BOUND
    assert quotes_asked() == asked


async def test_exact_prices_and_the_april_generation_are_never_quoted(
    client: httpx.AsyncClient, res: Resources, sim: httpx.AsyncClient
) -> None:
    """A Hailuo task (priced per clip, exact) under 2026-09, and under 2026-04 (April's
    per-second table; the catalog's other models are not offered) is admitted at its price
    with no quote asked; a media model under 2026-04 is refused as before, unasked."""
    team = await make_team(client)
    asked = quotes_asked()
    async with quote_socket(http_answer(200, {"code": 0, "data": {"total_usd": "0.01"}})) as q:
        for version in ("2026-09", "2026-04"):
            speaking = variant(res, qingbo_api_version=version, quote_url=q.url)
            admitted = await admit(speaking, team, task_body())
            gen = speaking.settings.generation
            task = normalize_task(task_body(), gen, speaking.catalog)
            expected = price_micros(task, gen, speaking.catalog, speaking.prices)
            assert admitted.row["cost_micros"] == expected
        april = variant(res, qingbo_api_version="2026-04", quote_url=q.url)
        with pytest.raises(InvalidRequest) as caught:
            await admit(april, team, media_body())
        assert caught.value.param == "model" and caught.value.code == "invalid_request"
        assert q.connections == 0
    assert quotes_asked() == asked


QUOTE_0_648 = http_answer(200, {"code": 0, "data": {"total_usd": "0.648"}})


async def test_a_rate_limited_submission_asks_no_quote(
    client: httpx.AsyncClient, current: Resources
) -> None:
    """The limit is checked before the quote: a refused submission does not wait on it."""
    team = await make_team(client, rpm_limit=1)
    async with quote_socket(QUOTE_0_648) as vendor:
        quoted = variant(current, quote_url=vendor.url)
        await admit(quoted, team, task_body())  # the minute's one submission (not quoted)
        with pytest.raises(RateLimited):
            await admit(quoted, team, media_body())
        assert vendor.connections == 0
        unlimited = await make_team(client)
        admitted = await admit(quoted, unlimited, media_body())  # what it would have asked
        assert vendor.connections == 1 and admitted.row["cost_micros"] == QUOTED_4_S


async def test_a_replayed_submission_asks_no_quote(
    client: httpx.AsyncClient, current: Resources
) -> None:
    """A retry with the same Idempotency-Key answers the stored task, its reservation the
    first request's quote, without asking again."""
    team = await make_team(client)
    async with quote_socket(QUOTE_0_648) as vendor:
        quoted = variant(current, quote_url=vendor.url)
        first = await admit(quoted, team, media_body(), key="quote-once")
        assert vendor.connections == 1 and first.row["cost_micros"] == QUOTED_4_S
        again = await admit(quoted, team, media_body(), key="quote-once")
        assert vendor.connections == 1
    assert again.row["id"] == first.row["id"]
    assert again.row["cost_micros"] == QUOTED_4_S


async def test_no_pooled_connection_is_held_while_the_quote_is_awaited(
    client: httpx.AsyncClient, current: Resources, settings: Settings
) -> None:
    """With an Idempotency-Key the admission has taken a connection (the key's lookup); it
    gives it back while the quote is out: a pool of one serves another request meanwhile."""
    team = await make_team(client)
    pool = await create_db_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with quote_socket(None) as silent:
            slow = variant(current, quote_url=silent.url, quote_timeout_seconds=30)
            admitting = asyncio.create_task(
                admit(dataclasses.replace(slow, pool=pool), team, media_body(), key="slow-quote")
            )
            await until(lambda: silent.connections == 1 or admitting.done())
            assert not admitting.done()
            async with pool.acquire(timeout=10) as conn:  # the only connection: free
                assert await conn.fetchval("SELECT 1") == 1
        # The quote's connection closed unanswered: the bound is reserved.
        admitted = await asyncio.wait_for(admitting, timeout=30)
    finally:
        await pool.close()
    assert admitted.row["cost_micros"] == BOUND


async def test_the_quote_client_is_a_resource_closed_with_the_others(settings: Settings) -> None:
    async with open_resources(
        settings.model_copy(update={"quote_before_admission": "media"})
    ) as on:
        quotes = on.quotes
        assert isinstance(quotes, QuoteClient) and not quotes.closed
    assert quotes.closed
    async with open_resources(settings.model_copy(update={"quote_before_admission": "off"})) as off:
        assert off.quotes is None


def test_the_quote_outcomes_are_counted_beside_the_other_metrics() -> None:
    from service.platform import metrics

    assert quoting.ADMISSION_QUOTES is metrics.ADMISSION_QUOTES
    assert metrics.ADMISSION_QUOTES._labelnames == ("outcome",)
    assert outcome("quoted") == metric("qgw_admission_quotes_total", outcome="quoted")


@pytest.mark.parametrize(
    ("status", "raw", "expected"),
    [
        (200, b'{"code":0,"data":{"total_usd":"0.648"}}', Quoted(648_000)),
        (200, b'{"code":0,"data":{"total_usd":0.6480001}}', Quoted(648_001)),  # rounded up
        (200, b'{"code":0,"data":{"total_usd":"' + b"9" * 40 + b'"}}', NoQuote("bad_answer", "")),
        (200, b'{"code":0,"data":{"total_usd":Infinity}}', NoQuote("bad_answer", "")),
        (200, b'{"code":7,"data":{"total_usd":"0.6"}}', NoQuote("bad_answer", "")),
        (200, b'{"code":0,"data":{"total_usd":true}}', NoQuote("bad_answer", "")),
        (200, b'"0.648"', NoQuote("bad_answer", "")),
        (429, b'{"errorKey":"input_video_duration_unknown"}', NoQuote("http_error", "")),
        (
            400,
            b'{"errorKey":"asset_not_found","message":"x\\u0000y","param":"video_urls"}',
            QuoteRefusal("asset_not_found", "xy", "video_urls"),
        ),
        (
            400,
            b'{"errorKey":"Not A Key","message":"m"}',
            NoQuote("http_error", ""),
        ),
    ],
)
def test_answers_are_read_defensively(status: int, raw: bytes, expected: Any) -> None:
    got = read_answer(status, raw)
    if isinstance(expected, NoQuote):
        assert isinstance(got, NoQuote) and got.outcome == expected.outcome
    else:
        assert got == expected
