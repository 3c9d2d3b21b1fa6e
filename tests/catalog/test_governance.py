"""The catalog's governance through the real API, simulator and database: retired ids,
family allow-lists, asset references, chained actions that must name the team's own
completed task, and Qingbo's permanent refusals. Refusals store, reserve and send nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.catalog.document import build_document
from service.catalog.engine import shipped_catalog
from service.config import Settings
from service.tasks import submission
from service.tasks.resources import Resources
from service.tasks.tracking import refresh_from_upstream
from tests.factories import ADMIN, TeamKey, claim, make_team, task_body, wait_for
from tests.prices import VERSION

CURRENT_ONLY = pytest.mark.skipif(
    VERSION != "2026-09", reason="the other families: the current generation only"
)
IMAGE = "https://cdn.example.com/i.jpg"


async def budgeted(client: httpx.AsyncClient, **overrides: Any) -> TeamKey:
    """A team with a month budget, so a reservation would show in the ledger."""
    team = await make_team(client, **overrides)
    answer = await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "50.00"}]},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    return team


async def nothing_moved(db: asyncpg.Connection, sim: httpx.AsyncClient) -> None:
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    assert await db.fetchval("SELECT count(*) FROM budget_ledger") == 0
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


@contextlib.asynccontextmanager
async def gateway_with(
    settings: Settings, document: dict[str, Any], tmp: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose catalog is `document` (QGW_CATALOG_FILE)."""
    path = tmp / "catalog.json"
    path.write_text(json.dumps(document))
    app = create_app(settings.model_copy(update={"catalog_file": path}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


async def test_retired_ids_are_refused_naming_the_date(
    settings: Settings,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    document = build_document()
    document["retired"]["sora-2"] = {"on": "2026-09-24", "family": "sora", "note": "vendor"}
    document["models"]["minimax-h3-max"]["retired_on"] = "2026-09-08"
    team = await budgeted(client)
    async with gateway_with(settings, document, tmp_path) as http:
        for model, date in (("sora-2", "2026-09-24"), ("minimax-h3-max", "2026-09-08")):
            for path in ("/v1/tasks", "/v1/tasks/estimate"):
                body = {"model": model, "prompt": "p", "duration": 5}
                answer = await http.post(path, json=body, headers=team.headers)
                assert answer.status_code == 400, answer.text
                error = answer.json()["error"]
                assert error["code"] == "model_retired" and error["param"] == "model"
                assert date in error["message"] and error["retired_on"] == date
    await nothing_moved(db, sim)


async def test_allow_lists_name_models_or_whole_families(
    client: httpx.AsyncClient, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await budgeted(client, allowed_models=["family:minimax-h3", "minimax-hailuo-2.3"])
    assert team.team["allowed_models"] == ["family:minimax-h3", "minimax-hailuo-2.3"]
    fast = task_body(model="minimax-hailuo-2.3-fast")
    refused = await client.post("/v1/tasks", json=fast, headers=team.headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert "family hailuo" in refused.json()["error"]["message"]
    ok = await client.post("/v1/tasks/estimate", json=task_body(), headers=team.headers)
    assert ok.status_code == 200
    h3 = {"model": "minimax-h3-max", "prompt": "p", "duration": 5}
    family = await client.post("/v1/tasks/estimate", json=h3, headers=team.headers)
    if VERSION == "2026-09":
        assert family.status_code == 200, family.text  # a model of the allowed family
    else:
        assert family.status_code == 400 and family.json()["error"]["param"] == "model"
    for bad, hint in (("family:nope", "unknown model or family"), ("minimax-h3x", "family:<key>")):
        patched = await client.patch(
            f"/admin/teams/{team.team['id']}", json={"allowed_models": [bad]}, headers=ADMIN
        )
        assert patched.status_code == 400 and patched.json()["error"]["param"] == (
            "allowed_models[0]"
        )
        assert hint in patched.json()["error"]["message"]
    await nothing_moved(db, sim)


@CURRENT_ONLY
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"image_urls": ["asset://img-1"]}, "image_urls"),
        ({"image_urls": [IMAGE], "video_urls": ["ASSET://clip-9"]}, "video_urls"),
        ({"first_frame_image": "asset://f"}, "first_frame_image"),
    ],
)
async def test_asset_references_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    body: dict[str, Any],
    param: str,
) -> None:
    team = await budgeted(client)
    sent = {"model": "minimax-h3", "prompt": "p", "duration": 5, **body}
    answer = await client.post("/v1/tasks", json=sent, headers=team.headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "asset_reference_unsupported" and error["param"] == param
    await nothing_moved(db, sim)


async def _completed_h3(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    team: TeamKey,
    **fields: Any,
) -> dict[str, Any]:
    """A minimax-h3 task of `team`, run for real through the simulator to completed."""
    body = {"model": "minimax-h3", "prompt": "p", "duration": 5, **fields}
    task = (await client.post("/v1/tasks", json=body, headers=team.headers)).json()
    assert await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"])) == (
        "submitted"
    )

    async def completed() -> bool:
        await refresh_from_upstream(res.pool, res.qingbo, res.settings, task["task_id"])
        row = await db.fetchrow("SELECT status FROM tasks WHERE id = $1", task["task_id"])
        return bool(row["status"] == "completed")

    await wait_for(completed, timeout=10)
    row = await db.fetchrow("SELECT upstream_task_id FROM tasks WHERE id = $1", task["task_id"])
    return {**task, "upstream_task_id": row["upstream_task_id"]}


@CURRENT_ONLY
async def test_a_chain_names_the_teams_own_completed_task(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 0.2})
    owner, other = await budgeted(client), await budgeted(client)
    source = await _completed_h3(client, res, db, sim, owner, resolution="768p", image_urls=[IMAGE])
    regenerate = {"model": "minimax-h3-regeneration", "ref_task_id": source["task_id"]}
    before = await db.fetchval("SELECT count(*) FROM tasks")

    # Another team's task is not found (as if it did not exist), before money moves.
    for path in ("/v1/tasks", "/v1/tasks/estimate"):
        stolen = await client.post(path, json=regenerate, headers=other.headers)
        assert stolen.status_code == 404, stolen.text
        assert stolen.json()["error"]["code"] == "task_not_found"
        assert stolen.json()["error"]["param"] == "ref_task_id"
    unknown = {**regenerate, "ref_task_id": "task-000000000000000000000000"}
    assert (await client.post("/v1/tasks", json=unknown, headers=owner.headers)).status_code == 404

    # The team's own task, still queued: 409.
    await sim.put("/_sim/config", json={"queue_seconds": 60})
    queued = await client.post(
        "/v1/tasks",
        json={"model": "minimax-h3", "prompt": "p", "duration": 5, "resolution": "768p"},
        headers=owner.headers,
    )
    early = {**regenerate, "ref_task_id": queued.json()["task_id"]}
    ledger = await db.fetchval("SELECT count(*) FROM budget_ledger")
    unfinished = await client.post("/v1/tasks", json=early, headers=owner.headers)
    assert unfinished.status_code == 409, unfinished.text
    assert unfinished.json()["error"]["code"] == "task_not_completed"
    assert await db.fetchval("SELECT count(*) FROM tasks") == before + 1  # the queued one only
    assert await db.fetchval("SELECT count(*) FROM budget_ledger") == ledger

    # Its own completed task: priced on what it inherits (5 s at 0.045, no image fee).
    accepted = await client.post("/v1/tasks", json=regenerate, headers=owner.headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["estimated_cost_usd"] == "0.225"
    # The app sees its own id for the source; the prompt is the source's, not resent.
    assert accepted.json()["other_fields"] == {"ref_task_id": source["task_id"]}
    assert accepted.json()["prompt"] is None and accepted.json()["action"] == "regenerate"
    chained = accepted.json()["task_id"]
    assert await submission.submit(res, chained, await claim(res, db, chained)) == "submitted"
    sent = [t["request"] for t in (await sim.get("/_sim/tasks")).json()["tasks"]]
    regenerations = [r for r in sent if r["model"] == "minimax-h3-regeneration"]
    # Qingbo is sent its own id for the source, never the gateway's.
    assert regenerations == [
        {
            "model": "minimax-h3-regeneration",
            "action": "regenerate",
            "ref_task_id": source["upstream_task_id"],
            **{k: v for k, v in regenerations[0].items() if k.startswith("callback_")},
        }
    ]


@CURRENT_ONLY
async def test_a_source_the_action_does_not_take_is_refused(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 0.2})
    team = await budgeted(client)
    source = await _completed_h3(client, res, db, sim, team)  # 2k by default: not 768p
    regenerate = {"model": "minimax-h3-regeneration", "ref_task_id": source["task_id"]}
    answer = await client.post("/v1/tasks", json=regenerate, headers=team.headers)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "ref_task_id"
    assert "must have resolution 768p" in answer.json()["error"]["message"]


@CURRENT_ONLY
async def test_a_permanent_upstream_refusal_fails_the_task_once_and_refunds_it(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    # The simulator's catalog lacks minimax-h3: it answers 400 model_not_found.
    document = build_document()
    del document["models"]["minimax-h3-regeneration"], document["models"]["minimax-h3"]
    (await sim.put("/_sim/catalog", json=document)).raise_for_status()
    team = await budgeted(client)
    body = {"model": "minimax-h3", "prompt": "p", "duration": 5}
    task = (await client.post("/v1/tasks", json=body, headers=team.headers)).json()
    assert await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"])) == (
        "failed"
    )
    row = await db.fetchrow(
        "SELECT status, error, dispatch_attempts, charged_micros FROM tasks WHERE id = $1",
        task["task_id"],
    )
    assert row["status"] == "failed" and row["error"]["code"] == "model_not_found"
    assert row["dispatch_attempts"] == 1 and row["charged_micros"] == 0
    usage = (await client.get("/v1/usage", headers=team.headers)).json()
    assert usage["budgets"] and all(b["reserved_usd"] == "0.00" for b in usage["budgets"])


RETIRED = sorted(shipped_catalog().retired.items())


@pytest.mark.parametrize(("model", "entry"), RETIRED, ids=[r[0] for r in RETIRED])
async def test_every_retired_id_of_the_shipped_catalog_is_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    model: str,
    entry: dict[str, Any],
) -> None:
    team = await budgeted(client)
    answer = await client.post(
        "/v1/tasks", json={"model": model, "prompt": "p", "duration": 5}, headers=team.headers
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_retired" and error["param"] == "model"
    assert entry["on"] in error["message"]
    await nothing_moved(db, sim)


async def test_allow_lists_are_checked_against_the_catalog_in_force(
    settings: Settings, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    document = build_document()
    document["families"]["acme"] = {"title": "Acme", "page": "-", "page_commit": None}
    document["models"]["acme-1"] = {
        **document["models"]["minimax-h3"],
        "family": "acme",
        "title": "Acme 1",
    }
    body = {"name": f"acme-{id(document)}", "allowed_models": ["family:acme", "acme-1"]}
    refused = await client.post("/admin/teams", json=body, headers=ADMIN)  # the shipped one
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "allowed_models[0]"
    async with gateway_with(settings, document, tmp_path) as http:
        created = await http.post("/admin/teams", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        patched = await http.patch(
            f"/admin/teams/{created.json()['id']}",
            json={"allowed_models": ["family:acme"]},
            headers=ADMIN,
        )
        assert patched.status_code == 200 and patched.json()["allowed_models"] == ["family:acme"]
