"""Model rules (data, not code paths) and the price table that prices them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

MICROS_PER_USD = 1_000_000

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
ACTIONS = ("generate", "image2video")
IMAGE_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")


@dataclass(frozen=True)
class CameraTag:
    tag: str
    gloss: str
    effect: str


CAMERA_TAGS: tuple[CameraTag, ...] = (
    CameraTag("[左移]", "pan-left", "camera translates left"),
    CameraTag("[右移]", "pan-right", "camera translates right"),
    CameraTag("[上升]", "boom-up", "camera rises"),
    CameraTag("[下降]", "boom-down", "camera lowers"),
    CameraTag("[推进]", "dolly-in", "camera moves forward"),
    CameraTag("[拉远]", "dolly-out", "camera moves backward"),
    CameraTag("[左摇]", "pan left", "body fixed, head turns left"),
    CameraTag("[右摇]", "pan right", "body fixed, head turns right"),
    CameraTag("[上摇]", "tilt up", "head tilts up"),
    CameraTag("[下摇]", "tilt down", "head tilts down"),
    CameraTag("[变焦推近]", "zoom-in", "focal-length zoom in"),
    CameraTag("[变焦拉远]", "zoom-out", "focal-length zoom out"),
    CameraTag("[晃动]", "shake", "handheld shake"),
    CameraTag("[跟随]", "follow", "follows the subject"),
    CameraTag("[固定]", "static", "camera fixed"),
)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    description: str
    resolutions: tuple[str, ...]
    durations: tuple[int, ...]
    # Durations allowed at a resolution, where narrower than `durations`.
    durations_by_resolution: dict[str, tuple[int, ...]] = field(default_factory=dict)
    default_resolution: str = "768p"
    default_duration: int = 6
    max_images: int = 4
    max_prompt_chars: int = 2000

    def durations_at(self, resolution: str) -> tuple[int, ...]:
        return self.durations_by_resolution.get(resolution, self.durations)


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="minimax-hailuo-2.3",
        family="hailuo",
        description="MiniMax Hailuo 2.3: text-to-video and image-to-video",
        resolutions=("768p", "1080p"),
        durations=(6, 10),
        durations_by_resolution={"1080p": (6,)},
    ),
    ModelSpec(
        id="minimax-hailuo-2.3-fast",
        family="hailuo",
        description="MiniMax Hailuo 2.3 fast: cheaper accelerated tier",
        resolutions=("768p", "1080p"),
        durations=(6, 10),
        durations_by_resolution={"1080p": (6,)},
    ),
)


class PriceTableError(ValueError):
    pass


@dataclass(frozen=True)
class PriceTable:
    """Micro-dollars per second of output video, by model and resolution."""

    per_second_micros: dict[str, dict[str, int]]
    currency: str = "USD"

    def price_micros(self, model: str, resolution: str, duration: int) -> int:
        return self.per_second_micros[model][resolution] * duration


def _usd_to_micros(text: str, where: str) -> int:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError) as exc:
        raise PriceTableError(f"{where}: {text!r} is not a decimal price") from exc
    micros = value * MICROS_PER_USD
    if value < 0 or micros != micros.to_integral_value():
        raise PriceTableError(f"{where}: {text!r} must be >= 0 with at most 6 decimals")
    return int(micros)


def parse_price_table(raw: dict[str, Any], models: tuple[ModelSpec, ...] = MODELS) -> PriceTable:
    entries = raw.get("models")
    if not isinstance(entries, dict):
        raise PriceTableError("price table: 'models' must be an object")
    table: dict[str, dict[str, int]] = {}
    for spec in models:
        by_res = entries.get(spec.id)
        if not isinstance(by_res, dict):
            raise PriceTableError(f"price table: no prices for model {spec.id}")
        table[spec.id] = {}
        for res in spec.resolutions:
            if res not in by_res:
                raise PriceTableError(f"price table: no {res} price for model {spec.id}")
            table[spec.id][res] = _usd_to_micros(str(by_res[res]), f"{spec.id}.{res}")
    return PriceTable(per_second_micros=table, currency=str(raw.get("currency", "USD")))


@lru_cache
def load_price_table(path: Path | None = None) -> PriceTable:
    if path is None:
        text = resources.files("service.catalog").joinpath("prices.json").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return parse_price_table(json.loads(text))


MODELS_BY_ID = {m.id: m for m in MODELS}
CAMERA_TAGS_BY_NAME: dict[str, CameraTag] = {}
for _tag in CAMERA_TAGS:
    CAMERA_TAGS_BY_NAME[_tag.tag] = _tag
    CAMERA_TAGS_BY_NAME[_tag.tag.strip("[]")] = _tag
    CAMERA_TAGS_BY_NAME[_tag.gloss] = _tag


def format_usd(micros: int) -> str:
    """Micro-dollars as a decimal string with at least two decimals: 311100 -> '0.3111'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    frac_text = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{frac_text}"


def parse_usd(text: str) -> int:
    return _usd_to_micros(text, "amount")
