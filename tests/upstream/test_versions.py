"""Both upstream generations on the real stack: what the gateway translates (proved by the
exact bodies the simulator received), what it refuses before anything moves, and the
current generation's permanent errors and cancel refusal."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.catalog.document import build_document
from service.config import Settings
from service.tasks import submission
from service.tasks.resources import Resources
from tests.factories import ADMIN, TeamKey, claim, make_team, task_body, wait_for

A, B, C = (f"https://img.example/{n}.png" for n in "abc")
PRICED_02 = {"512p": "0.02", "768p": "0.04", "1080p": "0.08"}


def price_table_with_02() -> dict[str, Any]:
    text = resources.files("service.catalog").joinpath("prices.json").read_text("utf-8")
    table = json.loads(text)
    table["models"]["minimax-hailuo-02"] = PRICED_02
    return dict(table)


@pytest.fixture(scope="module")
def prices_with_02(tmp_path_factory: Any) -> Path:
    path: Path = tmp_path_factory.mktemp("prices") / "prices.json"
    path.write_text(json.dumps(price_table_with_02()))
    return path


@pytest.fixture(scope="module")
async def gateways(settings: Settings, prices_with_02: Path) -> AsyncIterator[dict[str, Any]]:
    """A gateway per generation, with a price table that also prices minimax-hailuo-02."""
    path = prices_with_02
    apps: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for version in ("2026-04", "2026-09"):
            changes = {"qingbo_api_version": version, "price_table": path}
            app = create_app(settings.model_copy(update=changes))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[version] = app
        yield apps


@contextlib.asynccontextmanager
async def gateway(gateways: dict[str, Any], version: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gateways[version])
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def upstream(sim: httpx.AsyncClient, version: str, **config: Any) -> None:
    (await sim.put("/_sim/config", json={"api_version": version, **config})).raise_for_status()
    (await sim.put("/_sim/prices", json=price_table_with_02())).raise_for_status()


async def sent_bodies(sim: httpx.AsyncClient) -> list[dict[str, Any]]:
    """What the simulator received, without the per-task callback the gateway adds."""
    tasks = (await sim.get("/_sim/tasks")).json()["tasks"]
    bodies = []
    for task in tasks:
        body = dict(task["request"])
        assert "/internal/qingbo/callback/" in body.pop("callback_url")
        assert body.pop("callback_events") == [
            "queued",
            "processing",
            "completed",
            "failed",
            "cancelled",
        ]
        bodies.append(body)
    return bodies


async def admit_and_send(
    gateways: dict[str, Any],
    db: asyncpg.Connection,
    team: TeamKey,
    version: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """Admit through the gateway speaking `version`, then run its submit job once."""
    async with gateway(gateways, version) as http:
        answer = await http.post("/v1/tasks", json=body, headers=team.headers)
    assert answer.status_code == 200, answer.text
    task = dict(answer.json())
    res: Resources = gateways[version].state.resources
    assert await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"])) in (
        "submitted",
        "failed",
    )
    return task


COMMON = {"watermark": False, "prompt_optimizer": True, "fast_pretreatment": False}
TRANSLATIONS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "2026-09",
        "image_urls[0] becomes first_frame_image, image2video becomes generate",
        {"model": "minimax-hailuo-2.3", "prompt": "p", "action": "image2video", "image_urls": [A]},
        {"model": "minimax-hailuo-2.3", "action": "generate", "prompt": "p",
         "resolution": "768p", "duration": 6, "first_frame_image": A},
    ),
    (
        "2026-09",
        "02: image_urls[1] becomes last_frame_image; its own default duration",
        {"model": "minimax-hailuo-02", "prompt": "p", "image_urls": [A, B]},
        {"model": "minimax-hailuo-02", "action": "generate", "prompt": "p",
         "resolution": "768p", "duration": 5, "first_frame_image": A, "last_frame_image": B},
    ),
    (
        "2026-09",
        "02: first and last frame as sent; 512p with a first frame",
        {"model": "minimax-hailuo-02", "prompt": "p", "resolution": "512p",
         "first_frame_image": A, "last_frame_image": B, "duration": 10},
        {"model": "minimax-hailuo-02", "action": "generate", "prompt": "p",
         "resolution": "512p", "duration": 10, "first_frame_image": A, "last_frame_image": B},
    ),
    (
        "2026-09",
        "camera tags go to the prompt's start, in order, skipping those it holds",
        {"model": "minimax-hailuo-2.3", "prompt": "a street [拉远]",
         "camera_movement_tags": ["dolly-in", "[拉远]", "左移"]},
        {"model": "minimax-hailuo-2.3", "action": "generate",
         "prompt": "[推进][左移] a street [拉远]", "resolution": "768p", "duration": 6},
    ),
    (
        "2026-09",
        "16:9 (the old default) is dropped",
        {"model": "minimax-hailuo-2.3", "prompt": "p", "aspect_ratio": "16:9",
         "resolution": "1080P"},
        {"model": "minimax-hailuo-2.3", "action": "generate", "prompt": "p",
         "resolution": "1080p", "duration": 6},
    ),
    (
        "2026-09",
        "2.3-fast with its required first frame",
        {"model": "minimax-hailuo-2.3-fast", "prompt": "p", "first_frame_image": A},
        {"model": "minimax-hailuo-2.3-fast", "action": "generate", "prompt": "p",
         "resolution": "768p", "duration": 6, "first_frame_image": A},
    ),
    (
        "2026-04",
        "first_frame_image becomes image_urls; aspect_ratio always sent",
        {"model": "minimax-hailuo-2.3", "prompt": "p", "first_frame_image": A},
        {"model": "minimax-hailuo-2.3", "action": "image2video", "prompt": "p",
         "aspect_ratio": "16:9", "resolution": "768p", "duration": 6, "image_urls": [A]},
    ),
    (
        "2026-04",
        "camera_movement_tags stay a field; 9:16 and reference images are kept",
        {"model": "minimax-hailuo-2.3-fast", "prompt": "p", "aspect_ratio": "9:16",
         "camera_movement_tags": ["zoom-in"], "image_urls": [A, B, C]},
        {"model": "minimax-hailuo-2.3-fast", "action": "image2video", "prompt": "p",
         "aspect_ratio": "9:16", "resolution": "768p", "duration": 6,
         "image_urls": [A, B, C], "camera_movement_tags": ["[变焦推近]"]},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("version", "name", "body", "expected"), TRANSLATIONS, ids=[t[1] for t in TRANSLATIONS]
)
async def test_the_upstream_gets_exactly_what_its_generation_takes(
    gateways: dict[str, Any],
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    version: str,
    name: str,
    body: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    await upstream(sim, version)
    team = await make_team(client)
    task = await admit_and_send(gateways, db, team, version, body)
    assert await sent_bodies(sim) == [{**expected, **COMMON}]
    stored = await db.fetchrow(
        "SELECT dispatch_state, request FROM tasks WHERE id = $1", task["task_id"]
    )
    assert stored["dispatch_state"] == "submitted"
    # The app's own form is what the task keeps and shows.
    assert stored["request"]["prompt"] == body["prompt"]


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("2026-09", task_body(aspect_ratio="1:1"), "aspect_ratio"),
    ("2026-09", task_body(model="minimax-hailuo-2.3-fast", image_urls=None), "first_frame_image"),
    ("2026-09", task_body(image_urls=[A, B]), "image_urls[1]"),
    ("2026-09", task_body(model="minimax-hailuo-02", image_urls=[A, B, C]), "image_urls"),
    ("2026-09", task_body(model="minimax-hailuo-02", camera_movement_tags=["[固定]"]),
     "camera_movement_tags"),
    ("2026-09", task_body(seed=42), "seed"),  # refused by every Hailuo since 2026-09-24
    ("2026-04", task_body(model="minimax-hailuo-02"), "model"),
    ("2026-04", {"model": "minimax-h3", "prompt": "p", "duration": 5}, "model"),
    ("2026-04", task_body(seed=1), "seed"),
    ("2026-04", task_body(first_frame_image=A, last_frame_image=B), "last_frame_image"),
]  # fmt: skip


async def test_what_a_generation_cannot_honour_is_refused_before_anything_moves(
    gateways: dict[str, Any],
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
) -> None:
    team = await make_team(client)
    for version, body, param in REFUSED:
        await upstream(sim, version)
        async with gateway(gateways, version) as http:
            answer = await http.post("/v1/tasks", json=body, headers=team.headers)
        assert answer.status_code == 400, (version, param, answer.text)
        assert answer.json()["error"]["param"] == param
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    assert await db.fetchval("SELECT count(*) FROM budget_ledger") == 0
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


async def test_a_task_the_live_generation_cannot_take_fails_and_is_released(
    gateways: dict[str, Any],
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
) -> None:
    # Admitted while the upstream spoke 2026-04; by dispatch it speaks 2026-09.
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "5.00"}]},
        headers=ADMIN,
    )
    async with gateway(gateways, "2026-04") as http:
        answer = await http.post(
            "/v1/tasks", json=task_body(aspect_ratio="9:16"), headers=team.headers
        )
    task_id = answer.json()["task_id"]
    await upstream(sim, "2026-09")
    res: Resources = gateways["2026-09"].state.resources
    assert await submission.submit(res, task_id, await claim(res, db, task_id)) == "failed"
    row = await db.fetchrow(
        "SELECT status, error, charged_micros FROM tasks WHERE id = $1", task_id
    )
    assert row["status"] == "failed" and row["charged_micros"] == 0
    assert row["error"]["code"] == "invalid_request" and "aspect_ratio" in row["error"]["message"]
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert usage["budgets"][0]["reserved_usd"] == "0.00"


async def test_price_not_configured_upstream_is_permanent(
    gateways: dict[str, Any],
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
) -> None:
    # The gateway prices 02; the upstream has no price for it: 500 price_not_configured.
    await sim.put("/_sim/config", json={"api_version": "2026-09"})
    document = build_document()
    del document["models"]["minimax-hailuo-02"]
    (await sim.put("/_sim/catalog", json=document)).raise_for_status()
    team = await make_team(client)
    body = task_body(model="minimax-hailuo-02")
    task = await admit_and_send(gateways, db, team, "2026-09", body)
    row = await db.fetchrow(
        "SELECT status, error, dispatch_attempts, charged_micros FROM tasks WHERE id = $1",
        task["task_id"],
    )
    assert row["status"] == "failed" and row["error"]["code"] == "price_not_configured"
    assert row["dispatch_attempts"] == 1 and row["charged_micros"] == 0  # never retried
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


async def test_qingbo_refusing_a_cancel_while_processing_is_409(
    gateways: dict[str, Any],
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
) -> None:
    await upstream(sim, "2026-09", queue_seconds=0, processing_seconds=60)
    team = await make_team(client)
    task = await admit_and_send(gateways, db, team, "2026-09", task_body())

    async def processing_upstream() -> bool:
        tasks = (await sim.get("/_sim/tasks")).json()["tasks"]
        return bool(tasks) and tasks[0]["status"] == "processing"

    await wait_for(processing_upstream, timeout=5)
    async with gateway(gateways, "2026-09") as http:
        refused = await http.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    # Qingbo said 400 task_not_cancellable; the gateway re-read the task and says why.
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "not_cancellable"
    row = await db.fetchrow("SELECT status FROM tasks WHERE id = $1", task["task_id"])
    assert row["status"] == "processing"
