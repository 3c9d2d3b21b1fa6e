"""GET /v1/models: the catalog, with rules, prices and camera tags."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.catalog.models import (
    ACTIONS,
    ASPECT_RATIOS,
    CAMERA_TAGS,
    MODELS,
    format_usd,
)
from service.deps import TeamCtx
from service.errors import Unauthorized
from service.openapi import error_responses

router = APIRouter(tags=["catalog"])


@router.get("/v1/models", summary="List models", responses=error_responses(Unauthorized))
async def list_models(ctx: TeamCtx) -> dict[str, Any]:
    """The model catalog: models, request rules, per-second prices and camera tags."""
    prices = ctx.res.prices
    data = []
    for spec in MODELS:
        per_second = prices.per_second_micros[spec.id]
        data.append(
            {
                "id": spec.id,
                "family": spec.family,
                "description": spec.description,
                "actions": list(ACTIONS),
                "resolutions": list(spec.resolutions),
                "durations": list(spec.durations),
                "durations_by_resolution": {
                    res: list(spec.durations_at(res)) for res in spec.resolutions
                },
                "aspect_ratios": list(ASPECT_RATIOS),
                "max_prompt_chars": spec.max_prompt_chars,
                "max_images": spec.max_images,
                "image_formats": ["jpg", "png", "webp"],
                "defaults": {
                    "action": "generate",
                    "resolution": spec.default_resolution,
                    "duration": spec.default_duration,
                    "aspect_ratio": "16:9",
                    "watermark": False,
                    "prompt_optimizer": True,
                    "fast_pretreatment": False,
                },
                "pricing": {
                    "currency": prices.currency,
                    "unit": "second",
                    "per_second_usd": {res: format_usd(per_second[res]) for res in per_second},
                    "per_task_usd": {
                        f"{res}_{d}s": format_usd(per_second[res] * d)
                        for res in spec.resolutions
                        for d in spec.durations_at(res)
                    },
                },
            }
        )
    tags = [{"tag": t.tag, "gloss": t.gloss, "effect": t.effect} for t in CAMERA_TAGS]
    return {"object": "list", "data": data, "camera_movement_tags": tags}
