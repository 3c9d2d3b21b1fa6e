"""GET/PUT /admin/catalog: the catalog in force read and replaced while the gateway runs,
audited; a bad document refused whole; a replaced catalog never rewrites an admitted task."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg
import httpx
import pytest

from service.catalog.engine import shipped_catalog
from service.tasks.resources import Resources
from tests.factories import ADMIN, make_team, metric, row, task_body

MODEL = "minimax-hailuo-2.3"
ACTOR = {**ADMIN, "X-Actor": "ops@example.com"}
REPLACEMENTS = "SELECT count(*) FROM admin_audit WHERE action = 'catalog.replace'"


async def in_force(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/admin/catalog", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def repriced(document: dict[str, Any], price: str) -> dict[str, Any]:
    """The document with Hailuo 2.3's 768p 6 s clip at `price`."""
    edited = copy.deepcopy(document)
    edited["models"][MODEL]["pricing"]["tiers"]["768p"]["6"] = price
    edited["catalog"] = f"repriced {price}"
    return edited


def priced_by_catalog(res: Resources) -> bool:
    """2026-09 prices every model by the catalog; 2026-04 keeps April's per-second table."""
    return res.settings.generation.prices_from == "catalog"


async def estimate(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    body = task_body(model=MODEL, resolution="768p", duration=6)
    answer = await client.post("/v1/tasks/estimate", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_get_returns_the_catalog_in_force_with_its_digest(
    client: httpx.AsyncClient, res: Resources
) -> None:
    assert (await client.get("/admin/catalog")).status_code == 401
    shown = await in_force(client)
    shipped = shipped_catalog()
    assert shown["digest"] == shipped.digest == res.catalog.digest
    assert shown["source"] == "process"
    assert shown["models"] == len(shipped.models)
    assert shown["document"] == shipped.document
    # Prices as GET /v1/models shows them: the document's decimal USD strings.
    assert shown["document"]["models"][MODEL]["pricing"]["tiers"]["768p"]["10"] == "0.504"


async def test_put_replaces_it_audited_and_new_tasks_use_it(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    before = await in_force(client)
    old_estimate = await estimate(client, team.headers)
    assert old_estimate["catalog_digest"] == before["digest"]
    admitted = await client.post(
        "/v1/tasks",
        json=task_body(model=MODEL, resolution="768p", duration=6),
        headers=team.headers,
    )
    assert admitted.status_code == 200, admitted.text
    old_task = admitted.json()["task_id"]
    old_row = await row(db, old_task)

    answer = await client.put(
        "/admin/catalog",
        json={**before, "document": repriced(before["document"], "0.4")},
        headers=ACTOR,
    )
    assert answer.status_code == 200, answer.text
    put = answer.json()
    assert put["changed"] is True and put["previous_digest"] == before["digest"]
    assert put["digest"] != before["digest"]
    assert put["changes"] == [f"price_up       {MODEL}: 768p 6 s: 0.3294 -> 0.4 USD (+21.43%)"]
    shown = await in_force(client)
    assert (shown["digest"], shown["source"], shown["updated_by"]) == (
        put["digest"],
        "operator",
        "ops@example.com",
    )
    assert shown["label"] == "repriced 0.4"
    assert res.catalog.digest == put["digest"]  # the process that took the PUT: at once

    new_estimate = await estimate(client, team.headers)
    assert new_estimate["catalog_digest"] == put["digest"]
    if priced_by_catalog(res):
        assert (old_estimate["cost_usd"], new_estimate["cost_usd"]) == ("0.3294", "0.40")
    else:  # a 2026-04 upstream still charges April's per-second prices
        assert new_estimate["cost_usd"] == old_estimate["cost_usd"]

    # The task admitted before keeps the price and the digest it was admitted with.
    kept = await row(db, old_task)
    assert (kept["cost_micros"], kept["catalog_digest"]) == (
        old_row["cost_micros"],
        before["digest"],
    )
    newer = await client.post(
        "/v1/tasks",
        json=task_body(model=MODEL, resolution="768p", duration=6),
        headers=team.headers,
    )
    assert newer.status_code == 200, newer.text
    new_row = await row(db, newer.json()["task_id"])
    assert new_row["catalog_digest"] == put["digest"]
    if priced_by_catalog(res):
        assert (old_row["cost_micros"], new_row["cost_micros"]) == (329_400, 400_000)

    trail = await client.get("/admin/audit", params={"action": "catalog.replace"}, headers=ADMIN)
    assert trail.status_code == 200, trail.text
    # The trail is append-only (it outlives each test): this replacement's entry.
    [entry] = [e for e in trail.json()["data"] if e["after"]["digest"] == put["digest"]]
    assert entry["actor"] == "ops@example.com"
    assert entry["before"] == {"digest": before["digest"], "label": "shipped"}
    assert entry["after"]["digest"] == put["digest"]
    assert entry["after"]["changes"] == {"price_up": 1}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda d: d["models"][MODEL]["pricing"]["tiers"]["768p"].update({"6": "cheap"}),
            "models.minimax-hailuo-2.3.pricing.tiers.768p.6: 'cheap' is not a decimal price",
        ),
        (
            lambda d: d["models"][MODEL]["pricing"].update({"kind": "per_token"}),
            "models.minimax-hailuo-2.3.pricing.kind: unknown pricing kind 'per_token'",
        ),
        (
            lambda d: d["models"][MODEL]["body"]["properties"].update({"duration": {"type": 7}}),
            "models.minimax-hailuo-2.3.body: invalid JSON Schema",
        ),
        (lambda d: d.update({"models": {}}), "models: must be a non-empty object"),
        (
            lambda d: d["models"][MODEL].update({"family": "nobody"}),
            "models.minimax-hailuo-2.3.family: 'nobody' is not in families",
        ),
    ],
)
async def test_a_bad_catalog_is_refused_whole_and_the_old_one_stays(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, edit: Any, named: str
) -> None:
    before = await in_force(client)
    audited = await db.fetchval(REPLACEMENTS)
    # A good edit beside the bad one: nothing of the document may be taken.
    document = repriced(before["document"], "0.4")
    edit(document)
    answer = await client.put("/admin/catalog", json={"document": document}, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_catalog"
    assert error["param"] == "document"
    assert named in error["message"]
    assert (await in_force(client))["digest"] == before["digest"] == res.catalog.digest
    assert await db.fetchval("SELECT count(*) FROM catalog_documents") == 0
    assert await db.fetchval(REPLACEMENTS) == audited


async def test_not_a_document_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    answer = await client.put("/admin/catalog", json={"document": [1]}, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "document"
    unauthenticated = await client.put("/admin/catalog", json={"document": {}})
    assert unauthenticated.status_code == 401


async def test_an_edit_of_a_catalog_replaced_since_is_refused(client: httpx.AsyncClient) -> None:
    start = await in_force(client)
    first = await client.put(
        "/admin/catalog",
        json={"document": repriced(start["document"], "0.4"), "digest": start["digest"]},
        headers=ADMIN,
    )
    assert first.status_code == 200, first.text
    stale = await client.put(
        "/admin/catalog",
        json={"document": repriced(start["document"], "0.5"), "digest": start["digest"]},
        headers=ADMIN,
    )
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["code"] == "catalog_conflict"
    assert (await in_force(client))["digest"] == first.json()["digest"]


async def test_putting_the_document_in_force_again_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    start = await in_force(client)
    audited = await db.fetchval(REPLACEMENTS)
    again = await client.put("/admin/catalog", json=start, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert (again.json()["changed"], again.json()["changes"]) == (False, [])
    assert await db.fetchval(REPLACEMENTS) == audited
    assert await db.fetchval("SELECT count(*) FROM catalog_documents") == 0


async def test_a_document_larger_than_other_admin_bodies_is_read(
    client: httpx.AsyncClient, res: Resources
) -> None:
    start = await in_force(client)
    document = copy.deepcopy(start["document"])
    document["models"][MODEL]["notes"] = "x" * (2 * res.settings.max_admin_body_bytes)
    answer = await client.put("/admin/catalog", json={"document": document}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    too_large = "y" * res.settings.max_catalog_body_bytes
    document["models"][MODEL]["notes"] = too_large
    refused = await client.put("/admin/catalog", json={"document": document}, headers=ADMIN)
    assert refused.status_code == 413, refused.text


@pytest.mark.parametrize("depth", [2_000, 200_000])
async def test_a_deeply_nested_document_is_a_400(client: httpx.AsyncClient, depth: int) -> None:
    body = b'{"document": {"models": ' + b"[" * depth + b"]" * depth + b"}}"
    answer = await client.put(
        "/admin/catalog", content=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text[:300]


async def test_a_document_from_nobody_is_never_read(client: httpx.AsyncClient) -> None:
    body = b'{"document": {"models": {"x": "' + b"x" * (3 * 1024 * 1024) + b'"}}}'
    for headers in ({}, {"Authorization": "Bearer not-the-admin-token"}):
        answer = await client.put(
            "/admin/catalog", content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert answer.status_code == 401, answer.text[:300]


async def test_a_stored_document_this_process_cannot_use_is_refused_here_too(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    """A document put in force by another release that this one cannot compile: the
    process keeps the catalog it has, and counts the failure once."""
    assert res.catalog_refresh is not None
    failures = metric("qgw_catalog_load_failures_total", reason="invalid")
    kept = res.catalog.digest
    await db.execute(
        "INSERT INTO catalog_documents (digest, document, actor) VALUES ($1, $2, 'newer')",
        "f" * 64,
        '{"models": {"x": {"family": "x", "actions": [], "body": {}, "pricing": {}}}}',
    )
    for _ in range(2):
        await res.catalog_refresh.refresh()
    assert res.catalog.digest == kept
    assert metric("qgw_catalog_load_failures_total", reason="invalid") == failures + 1


@pytest.mark.parametrize(
    ("member", "value"),
    [("$ref", "http://203.0.113.9/schema.json"), ("$schema", "http://203.0.113.9/meta")],
)
async def test_a_document_naming_a_remote_schema_is_refused_unfetched(
    client: httpx.AsyncClient, member: str, value: str
) -> None:
    """The validator would fetch it from every process at every compile."""
    start = await in_force(client)
    document = copy.deepcopy(start["document"])
    document["models"][MODEL]["body"]["properties"]["prompt"][member] = value
    answer = await client.put("/admin/catalog", json={"document": document}, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith(
        f"models.{MODEL}.body.properties.prompt.{member}: only references within the document"
    )
    assert (await in_force(client))["digest"] == start["digest"]
