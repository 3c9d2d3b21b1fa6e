"""GET /v1/models: the catalog, with rules, prices and camera tags, for both generations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.catalog.engine import Catalog, ModelEntry
from service.catalog.generations import GENERATIONS, Generation, ModelSpec
from service.catalog.hailuo_terms import CAMERA_TAGS
from service.catalog.price_table import PriceTable
from service.platform.errors import Unauthorized
from service.platform.money import format_usd
from service.platform.openapi import error_responses

# A team's key is required: service/app.py adds the authentication when it mounts this.
router = APIRouter(tags=["catalog"])


async def get_prices(request: Request) -> PriceTable:
    prices: PriceTable = request.app.state.resources.prices
    return prices


async def get_live_generation(request: Request) -> Generation:
    """The generation the upstream speaks (QGW_QINGBO_API_VERSION)."""
    live: Generation = request.app.state.resources.settings.generation
    return live


async def get_catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.resources.catalog
    return catalog


def catalog_pricing(entry: ModelEntry) -> dict[str, Any]:
    """A catalog model's prices as the document writes them (decimal USD strings)."""
    raw = dict(entry_document(entry)["pricing"])
    return {"currency": "USD", **raw}


def entry_document(entry: ModelEntry) -> dict[str, Any]:
    return {
        "family": entry.family,
        "title": entry.title,
        "actions": list(entry.actions),
        "defaults": entry.defaults,
        "body": entry.schema,
        "pricing": entry.raw_pricing,
        "hold_settle": entry.hold_settle,
        "retired_on": entry.retired_on,
    }


def _pricing(
    spec: ModelSpec, prices: PriceTable, gen: Generation, catalog: Catalog
) -> dict[str, Any] | None:
    entry = catalog.models.get(spec.id)
    if gen.prices_from == "catalog":
        return catalog_pricing(entry) if entry is not None else None
    if not prices.is_priced(spec.id):
        return None
    per_second = prices.per_second_micros[spec.id]
    return {
        "currency": prices.currency,
        "unit": "second",
        "per_second_usd": {res: format_usd(per_second[res]) for res in spec.resolutions},
        "per_task_usd": {
            f"{res}_{d}s": format_usd(per_second[res] * d)
            for res in spec.resolutions
            for d in spec.durations_at(res)
        },
    }


def model_entry(
    spec: ModelSpec, gen: Generation, prices: PriceTable, catalog: Catalog
) -> dict[str, Any]:
    """One model's rules as `gen` applies them, and its price (null: unpriced)."""
    pricing = _pricing(spec, prices, gen, catalog)
    return {
        "id": spec.id,
        "family": spec.family,
        "description": spec.description,
        "accepted_fields": sorted(gen.accepted_fields(spec)),
        "resolutions": list(spec.resolutions),
        "durations": list(spec.durations),
        "durations_by_resolution": {res: list(spec.durations_at(res)) for res in spec.resolutions},
        "aspect_ratios": list(spec.aspect_ratios),
        "max_prompt_chars": spec.max_prompt_chars,
        "max_images": spec.max_images,
        "image_form": gen.image_form,
        "image_formats": ["jpg", "png", "webp"],
        "first_frame_required": spec.first_frame_required,
        "first_frame_only_resolutions": list(spec.first_frame_only),
        "last_frame": spec.last_frame,
        "seed": spec.seed,
        "camera_tags": spec.camera_tags,
        "defaults": {
            "resolution": spec.default_resolution,
            "duration": spec.default_duration,
            "watermark": False,
            "prompt_optimizer": True,
            "fast_pretreatment": False,
        },
        "priced": pricing is not None,
        "pricing": pricing,
    }


def catalog_entry(entry: ModelEntry) -> dict[str, Any]:
    """A model the catalog governs (not one of a generation's Hailuo models)."""
    return {
        "id": entry.id,
        **entry_document(entry),
        "priced": True,
        "pricing": catalog_pricing(entry),
    }


@router.get("/v1/models", summary="List models", responses=error_responses(Unauthorized))
async def list_models(
    prices: Annotated[PriceTable, Depends(get_prices)],
    live: Annotated[Generation, Depends(get_live_generation)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
) -> dict[str, Any]:
    """The models the live upstream offers (`data`): each generation's Hailuo models with
    their rules, and under 2026-09 every other model of the catalog in force (its JSON
    Schema and prices as the document writes them); what each generation offers; the
    catalog's digest, its retired ids, and the camera tags."""

    def offered(gen: Generation) -> list[dict[str, Any]]:
        own = [model_entry(spec, gen, prices, catalog) for spec in gen.models]
        if not gen.offers_catalog:
            return own
        others = [catalog_entry(e) for e in catalog.models.values() if not gen.offers(e.id)]
        return own + others

    return {
        "object": "list",
        "upstream_api_version": live.version,
        "catalog": {"digest": catalog.digest, "label": catalog.document.get("catalog")},
        "data": offered(live),
        "generations": {version: offered(gen) for version, gen in GENERATIONS.items()},
        "retired": catalog.retired,
        "camera_movement_tags": [
            {"tag": t.tag, "gloss": t.gloss, "effect": t.effect} for t in CAMERA_TAGS
        ],
    }
