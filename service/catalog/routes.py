"""GET /v1/models: the catalog, with rules, prices and camera tags, for both generations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.catalog.generations import GENERATIONS, Generation, ModelSpec
from service.catalog.models import CAMERA_TAGS, PriceTable, format_usd
from service.errors import Unauthorized
from service.openapi import error_responses

# A team's key is required: service/app.py adds the authentication when it mounts this.
router = APIRouter(tags=["catalog"])


async def get_prices(request: Request) -> PriceTable:
    prices: PriceTable = request.app.state.resources.prices
    return prices


async def get_live_generation(request: Request) -> Generation:
    """The generation the upstream speaks (QGW_QINGBO_API_VERSION)."""
    live: Generation = request.app.state.resources.settings.generation
    return live


def _pricing(spec: ModelSpec, prices: PriceTable) -> dict[str, Any] | None:
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


def model_entry(spec: ModelSpec, gen: Generation, prices: PriceTable) -> dict[str, Any]:
    """One model's rules as `gen` applies them, and its price (null: unpriced)."""
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
        "priced": prices.is_priced(spec.id),
        "pricing": _pricing(spec, prices),
    }


@router.get("/v1/models", summary="List models", responses=error_responses(Unauthorized))
async def list_models(
    prices: Annotated[PriceTable, Depends(get_prices)],
    live: Annotated[Generation, Depends(get_live_generation)],
) -> dict[str, Any]:
    """The models the live upstream offers (`data`), and what each generation offers, with
    their rules, per-second prices (null where unpriced) and the camera tags."""
    return {
        "object": "list",
        "upstream_api_version": live.version,
        "data": [model_entry(spec, live, prices) for spec in live.models],
        "generations": {
            version: [model_entry(spec, gen, prices) for spec in gen.models]
            for version, gen in GENERATIONS.items()
        },
        "camera_movement_tags": [
            {"tag": t.tag, "gloss": t.gloss, "effect": t.effect} for t in CAMERA_TAGS
        ],
    }
