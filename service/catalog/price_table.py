"""The April per-second price table: what an upstream of the 2026-04 generation charges
(QGW_PRICE_TABLE replaces the shipped prices.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from service.platform.money import AmountError, usd_to_micros


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
            try:
                micros = usd_to_micros(str(by_res[res]), f"{model_id}.{res}")
            except AmountError as exc:
                raise PriceTableError(str(exc)) from None
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
