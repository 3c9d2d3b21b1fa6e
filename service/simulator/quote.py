"""`POST /waveapi/quote`: the vendor's public quote endpoint (no key), answered from the
simulator's own rules and prices: the catalog it validates and bills by (PUT /_sim/catalog
replaces it) and, under 2026-04, April's per-second table.

The request is a task body; the answer Qingbo's envelope `{code, message, data}` with
`data.total_usd` (a decimal string), `unit`, `billed_quantity` and `multipliers`; a
refusal is a 400 carrying `errorKey` and `message`. A quote moves no money and knows no
account: a chained action (`ref_task_id`) is priced as asked, without its source task.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.catalog.intake import normalize_task
from service.catalog.rules import NormalizedTask
from service.platform.errors import ServiceError
from service.platform.money import format_usd
from service.simulator.engine import Simulator

UNITS = {"per_second": "second", "per_clip": "clip", "flat": "task"}


def refusal(key: str, message: str) -> JSONResponse:
    return JSONResponse({"code": 400, "errorKey": key, "message": message}, status_code=400)


def quote(sim: Simulator, raw: Any) -> JSONResponse:
    if not isinstance(raw, dict):
        return refusal("invalid_request", "body: must be a JSON object (a task body)")
    try:
        task = normalize_task(raw, sim.gen, sim.catalog)
        total = sim.price(task)
    except ServiceError as refused:
        return refusal(refused.code, refused.message)
    unit, quantity, multipliers = _billing(sim, task)
    data = {
        "model": task.model_id,
        "total_usd": format_usd(total),
        "unit": unit,
        "billed_quantity": quantity,
        "multipliers": multipliers,
    }
    return JSONResponse({"code": 0, "message": "success", "data": data})


def _billing(sim: Simulator, task: NormalizedTask) -> tuple[str, int, dict[str, Any]]:
    """What the total counts: seconds, one clip, or one task (and which price variant)."""
    if sim.gen.prices_from == "april_per_second":
        return "second", int(task.request.get("duration") or 0), {}
    entry = sim.catalog.models[task.model_id]
    pricing = entry.pricing
    asked = {k: v for k, v in pricing.defaults.items() if v is not None} | task.pricing_body
    multipliers: dict[str, Any] = {}
    for variant in pricing.variants:
        if variant.when.is_valid(asked):
            multipliers["tier"] = variant.name
            break
    if pricing.kind != "per_second":
        return UNITS[pricing.kind], 1, multipliers
    duration = asked.get("duration")
    if (
        isinstance(duration, int)
        and not isinstance(duration, bool)
        and duration != pricing.auto_duration
        and pricing.auto_duration != "model"
    ):
        return "second", duration, multipliers
    return "second", pricing.max_seconds, multipliers  # held at the longest it makes


def add_quote_route(app: FastAPI, sim: Simulator) -> None:
    @app.post("/waveapi/quote")
    async def waveapi_quote(request: Request) -> JSONResponse:
        """The price of a task body, as the vendor's public quote endpoint answers."""
        try:
            raw = await request.json()
        except ValueError:
            return refusal("invalid_request", "body: not valid JSON")
        return quote(sim, raw)
