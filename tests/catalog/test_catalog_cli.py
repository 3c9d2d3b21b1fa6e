"""`qingbo-gateway catalog check | diff | verify-prices` as the child processes an operator
starts, and the simulator's `POST /waveapi/quote` they are verified against."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.catalog.document import build_document
from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from tests.conftest import Process, settings_env
from tests.factories import ADMIN, Ran

MODEL = "minimax-hailuo-2.3"


@pytest.fixture(scope="module")
def quote_sim(logs_dir: Path) -> Iterator[str]:
    """A simulator of the current generation (the one the vendor's quote speaks), of this
    module's own: its catalog is replaced here."""
    port = free_port()
    proc = Process(
        ["simulator", "--port", str(port), "--api-version", "2026-09"],
        {k: v for k, v in settings_env(Settings()).items() if not k.startswith("QGW_CATALOG")},
        logs_dir / "quote-simulator.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(f"{url}/_sim/config")
    yield url
    proc.stop()


@pytest.fixture
async def quotes(quote_sim: str) -> Any:
    async with httpx.AsyncClient(base_url=quote_sim, timeout=10) as http:
        (await http.post("/_sim/reset")).raise_for_status()
        yield http


async def run(settings: Settings, *args: str) -> Ran:
    """`qingbo-gateway ARGS` as a child process, against this session's database."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def write(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


async def test_check_passes_a_good_document_and_names_what_is_wrong_in_a_bad_one(
    settings: Settings, tmp_path: Path
) -> None:
    good = build_document()
    ran = await run(settings, "catalog", "check", write(tmp_path / "good.json", good))
    assert ran.returncode == 0, ran.stderr
    assert f"{len(good['models'])} models" in ran.stdout
    # GET /admin/catalog's answer, downloaded as is, checks too.
    answer = {"digest": "whatever", "source": "operator", "document": good}
    ran = await run(settings, "catalog", "check", write(tmp_path / "answer.json", answer))
    assert ran.returncode == 0, ran.stderr

    bad = copy.deepcopy(good)
    bad["models"][MODEL]["pricing"]["tiers"]["768p"]["10"] = "0.5040001"
    ran = await run(settings, "catalog", "check", write(tmp_path / "bad.json", bad))
    assert ran.returncode == 1
    assert "models.minimax-hailuo-2.3.pricing.tiers.768p.10" in ran.stderr
    assert "more than 6 decimals" in ran.stderr
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    ran = await run(settings, "catalog", "check", str(tmp_path / "broken.json"))
    assert ran.returncode == 1 and "not a JSON document" in ran.stderr


async def test_diff_shows_models_added_retired_removed_and_prices_up_and_down(
    settings: Settings, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    old = build_document()
    new = copy.deepcopy(old)
    new["models"]["kling-v9"] = copy.deepcopy(new["models"]["kling-v3"])
    retired = new["models"].pop("vidu-q3-mix")
    new["retired"]["vidu-q3-mix"] = {"on": "2026-12-01", "family": retired["family"]}
    new["models"].pop("wan2.6")
    new["models"][MODEL]["pricing"]["tiers"]["768p"]["10"] = "0.55"
    new["models"]["minimax-hailuo-2.3-fast"]["pricing"]["tiers"]["1080p"]["6"] = "0.25"
    new_file = write(tmp_path / "new.json", new)
    ran = await run(settings, "catalog", "diff", write(tmp_path / "old.json", old), new_file)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()[1:]
    assert lines == [
        "added          kling-v9: family kling",
        f"price_up       {MODEL}: 768p 10 s: 0.504 -> 0.55 USD (+9.13%)",
        "price_down     minimax-hailuo-2.3-fast: 1080p 6 s: 0.297 -> 0.25 USD (-15.82%)",
        "retired        vidu-q3-mix: on 2026-12-01",
        "removed        wan2.6: family wan",
    ]
    # One file: against the catalog in force (an operator's, in the database).
    start = (await client.get("/admin/catalog", headers=ADMIN)).json()
    start["document"]["models"][MODEL]["pricing"]["tiers"]["768p"]["10"] = "0.55"
    put = await client.put("/admin/catalog", json=start, headers=ADMIN)
    assert put.status_code == 200, put.text
    ran = await run(settings, "catalog", "diff", new_file)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(put.json()["digest"][:12])
    assert f"{MODEL}: 768p 10 s" not in ran.stdout  # the same price in both now
    assert "price_down     minimax-hailuo-2.3-fast" in ran.stdout


async def test_the_simulator_quotes_from_its_own_prices(quotes: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "a harbour at dawn", "resolution": "768p", "duration": 10}
    answer = await quotes.post("/waveapi/quote", json=body)  # no key: the quote is public
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "code": 0,
        "message": "success",
        "data": {
            "model": MODEL,
            "total_usd": "0.504",
            "unit": "clip",
            "billed_quantity": 1,
            "multipliers": {},
        },
    }
    per_second = await quotes.post(
        "/waveapi/quote",
        json={"model": "kling-v3", "prompt": "a kite", "duration": 5, "generate_audio": True},
    )
    assert per_second.status_code == 200, per_second.text
    assert per_second.json()["data"]["unit"] == "second"
    assert per_second.json()["data"]["billed_quantity"] == 5
    assert per_second.json()["data"]["multipliers"] == {"tier": "audio"}

    retired = await quotes.post("/waveapi/quote", json={"model": "sora-2", "prompt": "x"})
    assert retired.status_code == 400
    assert retired.json()["errorKey"] == "model_retired"
    refused = await quotes.post("/waveapi/quote", json={**body, "seed": 7})
    assert refused.status_code == 400 and "seed" in refused.json()["message"]

    document = build_document()
    document["models"][MODEL]["pricing"]["tiers"]["768p"]["10"] = "0.61"
    (await quotes.put("/_sim/catalog", json=document)).raise_for_status()
    again = await quotes.post("/waveapi/quote", json=body)
    assert again.json()["data"]["total_usd"] == "0.61"


async def test_verify_prices_agrees_with_the_simulator_and_names_a_changed_price(
    settings: Settings, quotes: httpx.AsyncClient, quote_sim: str
) -> None:
    url = f"{quote_sim}/waveapi/quote"
    ran = await run(settings, "catalog", "verify-prices", "--url", url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert " 0 different" in ran.stdout
    assert "DIFFERENT" not in ran.stdout

    document = build_document()
    document["models"]["kling-v3"]["pricing"]["rates"]["1080p"] = "0.2"
    (await quotes.put("/_sim/catalog", json=document)).raise_for_status()
    ran = await run(settings, "catalog", "verify-prices", "--url", url)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    different = [line for line in ran.stdout.splitlines() if line.startswith("DIFFERENT")]
    assert len(different) == 1, ran.stdout
    assert different[0].startswith("DIFFERENT kling-v3 per second 1080p: catalog ")
    assert "higher at the vendor" in different[0]
