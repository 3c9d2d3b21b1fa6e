"""One task body per price of the catalog, for `qingbo-gateway catalog verify-prices`: each
tier of each model (resolution x duration per clip, each per-second rate, each variant,
the per-image fee), with what the gateway would reserve for it, to ask the vendor's quote.

Bodies are built from the model's own JSON Schema (required fields filled with plain
values, media fields with example URLs) and checked by the same intake as admission
(`normalize_task`, 2026-09), so a tier whose body the catalog itself refuses is reported
as skipped, never as a difference. Tiers priced on input media the vendor reads from the
file (reference-video seconds, a reference video's length) need a real video, so they are
skipped too, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.catalog.engine import Catalog, ModelEntry
from service.catalog.generations import generation
from service.catalog.intake import normalize_task, price_micros
from service.platform.errors import ServiceError

EXAMPLE_URLS = {
    "images": "https://example.com/quote-image.png",
    "videos": "https://example.com/quote-video.mp4",
    "audio": "https://example.com/quote-audio.mp3",
}
PROMPT = "a lighthouse on a cliff at dusk, waves below"


@dataclass(frozen=True)
class QuoteCase:
    model: str
    tier: str
    body: dict[str, Any] | None  # None: skipped
    reserve_micros: int = 0
    skipped: str = ""


def _media_kind(entry: ModelEntry, name: str) -> str | None:
    for kind in ("images", "videos", "audio"):
        if name in getattr(entry.media, kind):
            return kind
    return None


def example(schema: Any, kind: str | None) -> Any:
    """A plain value `schema` accepts (first enum value, minimum, one item, ...)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return next((v for v in schema["enum"] if v is not None), schema["enum"][0])
    kinds = schema.get("type")
    kind_of = next((t for t in kinds if t != "null"), None) if isinstance(kinds, list) else kinds
    if kind_of == "string" or (kind_of is None and kind is not None):
        return EXAMPLE_URLS[kind] if kind else "price check"
    if kind_of in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind_of == "boolean":
        return False
    if kind_of == "array":
        return [example(schema.get("items", {}), kind)] * max(1, int(schema.get("minItems", 1)))
    if kind_of == "object":
        props = schema.get("properties") or {}
        return {name: example(props.get(name, {}), kind) for name in schema.get("required", [])}
    return None


def _satisfy(entry: ModelEntry, body: dict[str, Any], when: Any) -> None:
    """Set what a variant's `when` asks of the body (required fields, constants)."""
    if not isinstance(when, dict):
        return
    props = entry.schema.get("properties") or {}
    for name, rule in (when.get("properties") or {}).items():
        if isinstance(rule, dict) and "const" in rule:
            body[name] = rule["const"]
    for name in when.get("required") or []:
        if name not in body:
            body[name] = example(props.get(name, {}), _media_kind(entry, name))
    for branch in (when.get("anyOf") or [])[:1]:
        _satisfy(entry, body, branch)


def _durations(entry: ModelEntry) -> list[int | None]:
    """Durations to try for a per-second tier: the default, then what the schema allows."""
    prop = (entry.schema.get("properties") or {}).get("duration")
    auto = entry.pricing.auto_duration
    found: list[int | None] = []
    default = entry.defaults.get("duration")
    if isinstance(default, int) and default != auto:
        found.append(default)
    if isinstance(prop, dict):
        for value in prop.get("enum") or []:
            if isinstance(value, int) and value != auto:
                found.append(value)
        low, high = prop.get("minimum"), prop.get("maximum")
        if isinstance(low, int) and isinstance(high, int):
            found.extend(v for v in range(low, high + 1) if v != auto)
    if not found:
        found.append(None)  # no duration field: the model picks (held at its longest)
    return list(dict.fromkeys(found))


def _base_body(entry: ModelEntry) -> dict[str, Any]:
    props = entry.schema.get("properties") or {}
    body: dict[str, Any] = {}
    if "prompt" in props:
        body["prompt"] = PROMPT
    for name in entry.schema.get("required") or []:
        if name not in body:
            body[name] = example(props.get(name, {}), _media_kind(entry, name))
    if (
        "action" in body
        and body["action"] != entry.actions[0]
        and "action" not in (entry.schema.get("required") or [])
    ):
        del body["action"]
    return body


class _Builder:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.gen = generation("2026-09")  # the generation the vendor's quote speaks

    def case(self, entry: ModelEntry, tier: str, bodies: list[dict[str, Any]]) -> QuoteCase:
        """The first of `bodies` the catalog accepts, with its reservation."""
        why = "no body the catalog accepts"
        for body in bodies:
            if any(body.get(f) for f in entry.media.videos) and (
                entry.pricing.input_video is not None or entry.pricing.billed_on_reference_video
            ):
                return QuoteCase(
                    entry.id, tier, None, skipped="priced on a reference video's seconds"
                )
            fields = {"model": entry.id, **body}
            try:
                task = normalize_task(fields, self.gen, self.catalog)
                amount = price_micros(task, self.gen, self.catalog, _NO_APRIL)
            except ServiceError as refused:
                why = refused.message
                continue
            return QuoteCase(entry.id, tier, fields, amount)
        return QuoteCase(entry.id, tier, None, skipped=why)


_NO_APRIL: Any = None  # 2026-09 prices every model by the catalog; April's table is unused


def quote_cases(catalog: Catalog) -> list[QuoteCase]:
    """Every tier of every model of `catalog` with its body, or why it is skipped."""
    builder = _Builder(catalog)
    cases: list[QuoteCase] = []
    for entry in catalog.models.values():
        if entry.chain is not None and "ref_task_id" in (entry.schema.get("required") or []):
            cases.append(
                QuoteCase(entry.id, "*", None, skipped="priced on its source task (ref_task_id)")
            )
            continue
        base = _base_body(entry)
        raw = entry.raw_pricing
        cases.extend(_tiers(builder, entry, base, raw, "", None))
        for i, variant in enumerate(raw.get("variants") or []):
            name = f"{variant.get('name', f'variant {i}')}: "
            cases.extend(_tiers(builder, entry, base, variant, name, variant["when"]))
        image = raw.get("per_image")
        if image:
            body = dict(base)
            body[image["fields"][0]] = [EXAMPLE_URLS["images"]] * (int(image["free"]) + 1)
            tier = f"per image beyond {image['free']}"
            cases.append(builder.case(entry, tier, [_with_duration(entry, body)]))
    return cases


def _with_duration(entry: ModelEntry, body: dict[str, Any]) -> dict[str, Any]:
    for seconds in _durations(entry):
        if seconds is not None and "duration" not in body:
            return {**body, "duration": seconds}
    return body


def _tiers(
    builder: _Builder,
    entry: ModelEntry,
    base: dict[str, Any],
    holder: dict[str, Any],
    prefix: str,
    when: Any,
) -> list[QuoteCase]:
    has_resolution = "resolution" in (entry.schema.get("properties") or {})
    start = dict(base)
    if when is not None:
        _satisfy(entry, start, when)
    cases = []
    for res, by_duration in (holder.get("tiers") or {}).items():
        for seconds in by_duration:
            body = {**start, "duration": int(seconds)}
            if has_resolution:
                body["resolution"] = res
            cases.append(builder.case(entry, f"{prefix}{res} {seconds} s", [body]))
    for res in holder.get("rates") or {}:
        tries = []
        for seconds in _durations(entry):
            body = dict(start)
            if seconds is not None:
                body["duration"] = seconds
            if has_resolution:
                body["resolution"] = res
            tries.append(body)
        cases.append(builder.case(entry, f"{prefix}per second {res}", tries))
    if "price" in holder:
        cases.append(builder.case(entry, f"{prefix}flat", [start]))
    return cases
