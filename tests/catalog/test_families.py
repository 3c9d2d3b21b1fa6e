"""Every family of the shipped catalog, from its examples file (tests/catalog/examples/
<family>.json, written from the vendor's pages): valid bodies pass, invalid ones are
refused naming the field, prices are the hand-computed ones, through the engine and
through the real API; and one typical body of every model goes end to end through the
gateway to the simulator, which bills what the catalog says. A family file committed
later is picked up by these tests without a change here."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.catalog.engine import shipped_catalog
from service.platform.errors import ServiceError
from service.platform.money import format_usd, micros_to_quota, parse_usd
from service.tasks import submission
from service.tasks.resources import Resources
from service.tasks.tracking import refresh_from_upstream
from tests.factories import ADMIN, claim, make_team, wait_for
from tests.prices import VERSION

EXAMPLES = Path(__file__).parent / "examples"
FAMILY_FILES = sorted(EXAMPLES.glob("*.json"))
CATALOG = shipped_catalog()


def _cases(kind: str) -> list[tuple[str, str, Any]]:
    found = []
    for path in FAMILY_FILES:
        for model_id, cases in json.loads(path.read_text("utf-8")).items():
            for i, case in enumerate(cases.get(kind, [])):
                found.append((f"{path.stem}/{model_id}/{kind}[{i}]", model_id, case))
    return found


VALID, INVALID, PRICES = _cases("valid"), _cases("invalid"), _cases("price_usd")


def _ids(cases: list[tuple[str, str, Any]]) -> list[str]:
    return [c[0] for c in cases]


def test_every_example_file_names_models_of_the_catalog() -> None:
    assert FAMILY_FILES, "no examples"
    for path in FAMILY_FILES:
        for model_id in json.loads(path.read_text("utf-8")):
            assert model_id in CATALOG.models, f"{path.name}: {model_id} not in the catalog"


@pytest.mark.parametrize(("name", "model_id", "body"), VALID, ids=_ids(VALID))
def test_valid_examples_pass_the_engine(name: str, model_id: str, body: dict[str, Any]) -> None:
    CATALOG.entry(model_id).check(body)


@pytest.mark.parametrize(("name", "model_id", "case"), INVALID, ids=_ids(INVALID))
def test_invalid_examples_are_refused_naming_the_field(
    name: str, model_id: str, case: dict[str, Any]
) -> None:
    with pytest.raises(ServiceError) as refused:
        CATALOG.entry(model_id).check(case["body"])
    assert refused.value.code == "invalid_request"
    assert refused.value.param == case["param"], refused.value.message
    assert refused.value.message.startswith(f"{case['param']}: ")


@pytest.mark.parametrize(("name", "model_id", "case"), PRICES, ids=_ids(PRICES))
def test_example_prices_are_the_reservation(name: str, model_id: str, case: dict[str, Any]) -> None:
    entry = CATALOG.entry(model_id)
    entry.check(case["body"])
    assert entry.pricing.reserve(case["body"]) == parse_usd(case["usd"])


def _api_cases() -> list[tuple[str, str, Any]]:
    """Priced examples the API can take on their own (a chained one needs a real source)."""
    return [c for c in PRICES if "ref_task_id" not in c[2]["body"]]


API_PRICES = _api_cases()


@pytest.mark.parametrize(("name", "model_id", "case"), API_PRICES, ids=_ids(API_PRICES))
async def test_the_api_prices_each_example_as_its_page_does(
    client: httpx.AsyncClient, name: str, model_id: str, case: dict[str, Any]
) -> None:
    team = await make_team(client)
    body = {"model": model_id, **case["body"]}
    answer = await client.post("/v1/tasks/estimate", json=body, headers=team.headers)
    if VERSION == "2026-04" and model_id not in ("minimax-hailuo-2.3", "minimax-hailuo-2.3-fast"):
        # The April generation offers its two Hailuo models only.
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "model"
        assert "not offered by the configured Qingbo API (2026-04)" in answer.text
        return
    assert answer.status_code == 200, answer.text
    if VERSION == "2026-09":
        assert Decimal(answer.json()["cost_usd"]) == Decimal(case["usd"])
        assert answer.json()["catalog_digest"] == CATALOG.digest


# Hailuo's models go through the translation of both generations' forms first (README
# "Qingbo versions"; tests/catalog/test_rules.py covers them through the API).
API_INVALID = [c for c in INVALID if not c[1].startswith("minimax-hailuo")]


@pytest.mark.parametrize(("name", "model_id", "case"), API_INVALID, ids=_ids(API_INVALID))
async def test_the_api_refuses_each_invalid_example_and_stores_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    name: str,
    model_id: str,
    case: dict[str, Any],
) -> None:
    team = await make_team(client)
    budget = {"budgets": [{"window": "month", "limit_usd": "100.00"}]}  # a reservation shows
    put = await client.put(f"/admin/teams/{team.team['id']}/budgets", json=budget, headers=ADMIN)
    assert put.status_code == 200, put.text
    answer = await client.post(
        "/v1/tasks", json={"model": model_id, **case["body"]}, headers=team.headers
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    # The April generation offers none of these models: refused naming the model.
    assert error["param"] == (case["param"] if VERSION == "2026-09" else "model"), error
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    assert await db.fetchval("SELECT count(*) FROM budget_ledger") == 0
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


def _typical() -> list[tuple[str, dict[str, Any]]]:
    """One typical valid body per model of the catalog (its first example without a chain)."""
    bodies: dict[str, dict[str, Any]] = {}
    for path in FAMILY_FILES:
        for model_id, cases in json.loads(path.read_text("utf-8")).items():
            for body in cases.get("valid", []):
                if "ref_task_id" not in body and model_id not in bodies:
                    bodies[model_id] = body
    return sorted(bodies.items())


TYPICAL = _typical()


@pytest.mark.skipif(VERSION != "2026-09", reason="every family: the current generation only")
@pytest.mark.parametrize(("model_id", "body"), TYPICAL, ids=[t[0] for t in TYPICAL])
async def test_every_model_goes_end_to_end_and_the_simulator_bills_the_catalog_price(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    model_id: str,
    body: dict[str, Any],
) -> None:
    team = await make_team(client)
    sent = {"model": model_id, **body, "metadata": {"suite": "families"}}
    answer = await client.post("/v1/tasks", json=sent, headers=team.headers)
    assert answer.status_code == 200, answer.text
    task = answer.json()
    price = CATALOG.entry(model_id).pricing.reserve(body)
    assert task["estimated_cost_usd"] == format_usd(price)
    outcome = await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"]))
    assert outcome == "submitted"
    [received] = (await sim.get("/_sim/tasks")).json()["tasks"]
    upstream = {k: v for k, v in received["request"].items() if not k.startswith("callback_")}
    # Exactly the app's fields (its metadata stays with the gateway), action filled in.
    expected = {"model": model_id, **body}
    if model_id.startswith("minimax-hailuo"):
        assert upstream["model"] == model_id and "metadata" not in upstream
    else:
        assert upstream == {"action": CATALOG.models[model_id].actions[0], **expected}
    assert received["cost"] == micros_to_quota(price)  # the simulator bills the catalog

    async def completed() -> bool:  # read from Qingbo (the simulator) and recorded
        await refresh_from_upstream(res.pool, res.qingbo, res.settings, task["task_id"])
        status = await db.fetchval("SELECT status FROM tasks WHERE id = $1", task["task_id"])
        return bool(status == "completed")

    await wait_for(completed, timeout=10)
    row = await db.fetchrow(
        "SELECT catalog_digest, model, charged_micros FROM tasks WHERE id = $1", task["task_id"]
    )
    assert row["catalog_digest"] == CATALOG.digest and row["model"] == model_id
    assert row["charged_micros"] == price  # settled on Qingbo's cost: the catalog's price


@pytest.mark.skipif(VERSION != "2026-09", reason="the other families: the current generation only")
async def test_a_field_named_like_a_hailuo_one_is_sent_as_the_app_sent_it(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    """SkyReels takes `prompt_optimizer` too: its body is its own, not Hailuo's form."""
    models = [m for m in CATALOG.models.values() if "prompt_optimizer" in m.schema["properties"]]
    others = [m for m in models if not m.id.startswith("minimax-hailuo")]
    if not others:
        pytest.skip("no other family takes prompt_optimizer in this catalog")
    entry = others[0]
    body = {"model": entry.id, "prompt": "a fox", "duration": 5, "prompt_optimizer": False}
    entry.check({k: v for k, v in body.items() if k != "model"})
    team = await make_team(client)
    task = (await client.post("/v1/tasks", json=body, headers=team.headers)).json()
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"
    [received] = (await sim.get("/_sim/tasks")).json()["tasks"]
    sent = {k: v for k, v in received["request"].items() if not k.startswith("callback_")}
    assert sent == {"action": entry.actions[0], **body}
