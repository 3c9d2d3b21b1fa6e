"""Which models reserve more than they usually charge, and by how much (README "Catalog").

The reservation is the most a task can cost (pricing.py); where the price depends on what
only the result tells (a reference video's length, a model-chosen duration), the most is
assumed and the task settles on Qingbo's `cost`. This lists, from a catalog's data, each
such model with the most its reservation can exceed the charge, so the README table is
made from the document in force: `python -m service.catalog.reservations`.
"""

from __future__ import annotations

from service.catalog.engine import Catalog, ModelEntry, shipped_catalog
from service.platform.money import format_usd


def _dearest_rate(entry: ModelEntry) -> int:
    tariffs = [entry.pricing.base, *(v.tariff for v in entry.pricing.variants)]
    rates = [r for t in tariffs for r in (t.per_second or {}).values()]
    return max(rates, default=0)


def over_reservations(catalog: Catalog) -> list[tuple[str, str, str]]:
    """(model, why, the most the reservation exceeds the charge, USD) per model that can."""
    rows = []
    for entry in catalog.models.values():
        pricing, reasons, most = entry.pricing, [], 0
        video = pricing.input_video
        if video is not None and pricing.max_video_seconds:
            rate = max((video.rates or {}).values(), default=video.rate or 0)
            most += rate * pricing.max_video_seconds
            reasons.append(f"reference video assumed {pricing.max_video_seconds} s")
        if pricing.billed_on_reference_video:
            most += _dearest_rate(entry) * pricing.max_video_seconds
            reasons.append(f"billed on the reference video, assumed {pricing.max_video_seconds} s")
        auto = pricing.auto_duration
        if auto is not None and pricing.max_seconds:
            what = "the model picks its length" if auto == "model" else f"duration {auto}"
            most += _dearest_rate(entry) * pricing.max_seconds
            reasons.append(f"{what}: reserved at {pricing.max_seconds} s")
        elif (
            entry.defaults.get("duration") is None
            and pricing.kind == "per_second"
            and "duration" not in (entry.schema.get("required") or [])
        ):
            most += _dearest_rate(entry) * pricing.max_seconds
            reasons.append(f"duration left out: reserved at {pricing.max_seconds} s")
        if reasons:
            rows.append((entry.id, "; ".join(reasons), format_usd(most)))
    return sorted(rows)


def main() -> None:
    print("| model | why | reserved above the charge, at most (USD) |")
    print("| --- | --- | --- |")
    for model, why, most in over_reservations(shipped_catalog()):
        print(f"| `{model}` | {why} | {most} |")


if __name__ == "__main__":
    main()
