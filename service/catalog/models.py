"""Model rules (data, not code paths) and the price table that prices them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

MICROS_PER_USD = 1_000_000

# Qingbo's quota unit (2026-09 `pre_consumed_cost`, `cost`): 500,000 quota = 1 USD, so one
# quota is exactly two micro-dollars.
MICROS_PER_QUOTA = 2


class TaskStatus(StrEnum):
    """A task's status as Qingbo names it, and as callers see it (tasks/states.py)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(TaskStatus)
TERMINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
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


class PriceTableError(ValueError):
    pass


@dataclass(frozen=True)
class PriceTable:
    """Micro-dollars per second of output video, by model and resolution.

    A model missing from the table is *unpriced*: the gateway refuses it before anything
    is stored or sent (`price_not_configured`), as Qingbo does for its own unpriced models.
    """

    per_second_micros: dict[str, dict[str, int]]
    currency: str = "USD"

    def is_priced(self, model: str) -> bool:
        return model in self.per_second_micros

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


def parse_price_table(raw: dict[str, Any]) -> PriceTable:
    """Every listed model must be one the catalog knows, priced at each of its resolutions
    (in every generation that offers it); models left out are unpriced."""
    from service.catalog.generations import resolutions_of  # the catalog's data

    entries = raw.get("models")
    if not isinstance(entries, dict):
        raise PriceTableError("price table: 'models' must be an object")
    table: dict[str, dict[str, int]] = {}
    for model_id, by_res in entries.items():
        resolutions = resolutions_of(model_id)
        if not resolutions:
            raise PriceTableError(f"price table: unknown model {model_id!r}")
        if not isinstance(by_res, dict):
            raise PriceTableError(f"price table: prices of {model_id} must be an object")
        table[model_id] = {}
        for res in resolutions:
            if res not in by_res:
                raise PriceTableError(f"price table: no {res} price for model {model_id}")
            micros = _usd_to_micros(str(by_res[res]), f"{model_id}.{res}")
            if micros == 0:  # a free task would reserve nothing, and the ledger holds > 0
                raise PriceTableError(f"price table: {model_id}.{res} must be more than 0")
            table[model_id][res] = micros
    return PriceTable(per_second_micros=table, currency=str(raw.get("currency", "USD")))


@lru_cache
def load_price_table(path: Path | None = None) -> PriceTable:
    if path is None:
        text = resources.files("service.catalog").joinpath("prices.json").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return parse_price_table(json.loads(text))


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


def quota_to_micros(quota: int) -> int:
    return quota * MICROS_PER_QUOTA


def micros_to_quota(micros: int) -> int:
    """Micro-dollars as whole quota, rounded up (an odd micro-dollar is half a quota: only a
    price table with odd micro-dollar prices can give one, and a reservation must not be
    understated)."""
    return -(-micros // MICROS_PER_QUOTA)
