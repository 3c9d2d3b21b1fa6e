"""A catalog replaced while tasks run, with a real API process and a real worker process:
both use the new document within QGW_CATALOG_REFRESH_SECONDS (2 s; the test allows 5),
tasks admitted before keep the price and the digest they were admitted with, tasks
admitted after are priced by the new one, and the worker settles each on what Qingbo
charged for it."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.catalog.engine import shipped_catalog
from service.cli.dev import free_port, wait_until_healthy
from service.tasks.resources import Resources
from tests.factories import ADMIN, make_team, row, task_body, wait_for, wait_terminal

MODEL = "minimax-hailuo-2.3"
SWITCH_SECONDS = 5.0  # the promise: every process on the new catalog within 5 s

pytestmark = pytest.mark.usefixtures("api_server")


def catalog_digests(scrape: str) -> set[str]:
    """The digests a process reports using (qgw_catalog_info{digest} == 1)."""
    return {
        sample.labels["digest"]
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "qgw_catalog_info" and sample.value >= 1
    }


@pytest.fixture
async def api(api_server: str, db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    """The API process; afterwards, back on the shipped catalog before the next test."""
    async with httpx.AsyncClient(base_url=api_server, timeout=30) as http:
        yield http
        await db.execute("DELETE FROM catalog_documents")
        shipped = shipped_catalog().digest

        async def back() -> bool:
            return catalog_digests((await http.get("/metrics")).text) == {shipped}

        await wait_for(back, timeout=SWITCH_SECONDS)


async def test_a_replaced_catalog_reaches_every_process_and_never_reprices_old_tasks(
    api: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
    res: Resources,
    start_worker: Any,
) -> None:
    worker_port = free_port()
    start_worker(worker_http_port=worker_port)
    worker_url = f"http://127.0.0.1:{worker_port}"
    wait_until_healthy(f"{worker_url}/healthz")
    team = await make_team(api)
    body = task_body(model=MODEL, resolution="768p", duration=6)
    by_catalog = res.settings.generation.prices_from == "catalog"

    # Old tasks, still running at Qingbo when the catalog is replaced.
    await sim.put("/_sim/config", json={"processing_seconds": 6})
    old = []
    for _ in range(2):
        answer = await api.post("/v1/tasks", json=body, headers=team.headers)
        assert answer.status_code == 200, answer.text
        old.append(answer.json()["task_id"])
    before = (await api.get("/admin/catalog", headers=ADMIN)).json()

    async def accepted_upstream() -> bool:
        rows = [await row(db, task_id) for task_id in old]
        return all(r["upstream_task_id"] for r in rows)

    await wait_for(accepted_upstream)
    old_rows = {task_id: await row(db, task_id) for task_id in old}

    document = copy.deepcopy(before["document"])
    document["models"][MODEL]["pricing"]["tiers"]["768p"]["6"] = "0.4"
    # Qingbo raises the price at the same moment: it charges tasks created from now on.
    (await sim.put("/_sim/catalog", json=document)).raise_for_status()
    replaced = await api.put(
        "/admin/catalog", json={"document": document, "digest": before["digest"]}, headers=ADMIN
    )
    assert replaced.status_code == 200, replaced.text
    new_digest = replaced.json()["digest"]
    started = time.monotonic()

    async def api_switched() -> bool:
        answer = await api.post("/v1/tasks/estimate", json=body, headers=team.headers)
        return bool(answer.json()["catalog_digest"] == new_digest)

    async with httpx.AsyncClient(base_url=worker_url, timeout=10) as worker:

        async def worker_switched() -> bool:
            return catalog_digests((await worker.get("/metrics")).text) == {new_digest}

        await wait_for(api_switched, timeout=SWITCH_SECONDS)
        await wait_for(worker_switched, timeout=SWITCH_SECONDS - (time.monotonic() - started))
    estimate = (await api.post("/v1/tasks/estimate", json=body, headers=team.headers)).json()
    assert estimate["cost_usd"] == ("0.40" if by_catalog else estimate["cost_usd"])

    await sim.put("/_sim/config", json={"processing_seconds": 0.7})
    answer = await api.post("/v1/tasks", json=body, headers=team.headers)
    assert answer.status_code == 200, answer.text
    new = answer.json()["task_id"]

    for task_id in [*old, new]:
        assert (await wait_terminal(api, team, task_id))["status"] == "completed"
    for task_id in old:
        settled = await row(db, task_id)
        assert settled["catalog_digest"] == before["digest"]
        assert settled["cost_micros"] == old_rows[task_id]["cost_micros"]
        if by_catalog:  # reserved and charged at the old price
            assert (settled["cost_micros"], settled["charged_micros"]) == (329_400, 329_400)
    settled_new = await row(db, new)
    assert settled_new["catalog_digest"] == new_digest
    if by_catalog:
        assert (settled_new["cost_micros"], settled_new["charged_micros"]) == (400_000, 400_000)
    else:  # a 2026-04 upstream still charges April's per-second prices, before and after
        assert settled_new["charged_micros"] == old_rows[old[0]]["cost_micros"]
