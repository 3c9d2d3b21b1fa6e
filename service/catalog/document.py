"""The catalog document: read from the per-family files, merged, checked whole, digested.

The document is data an operator may replace at run time (README "Catalog"), so nothing
here keeps state: `build_document` merges the fragments the package ships
(`service/catalog/families/*.json`, one per family, in file-name order) every time it is
called, and `check_document` refuses a bad document whole with a message naming the
first thing wrong (`CatalogError`). No generated `catalog.json` is kept beside the
fragments: the document is built at load, so the shipped default can never drift from
its source. `canonical_json` and `digest` identify a document by its content.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

PRICING_KINDS = ("per_second", "per_clip", "flat")
PRICING_KEYS = {
    "kind",
    "rates",
    "tiers",
    "price",
    "variants",
    "input_video",
    "per_image",
    "billed_seconds",
}
MODEL_KEYS = {
    "family",
    "title",
    "actions",
    "chain",
    "defaults",
    "body",
    "media",
    "duration",
    "pricing",
    "hold_settle",
    "retired_on",
    "notes",
}
# The gateway's own fields: handled the same for every model, never in a model's schema.
GATEWAY_FIELDS = ("model", "callback_url", "callback_events", "metadata", "priority")
MAX_PRICE_DECIMALS = 6


class CatalogError(ValueError):
    """A document that cannot be used; the message names what is wrong, where."""


def canonical_json(document: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace: equal documents give equal bytes (the digest's input)."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(document)).hexdigest()


def _fragments(folder: Path | None) -> list[tuple[str, dict[str, Any]]]:
    if folder is not None:
        files = sorted(folder.glob("*.json"))
        return [(f.name, json.loads(f.read_text("utf-8"))) for f in files]
    shipped = resources.files("service.catalog").joinpath("families")
    found = sorted((p for p in shipped.iterdir() if p.name.endswith(".json")), key=lambda p: p.name)
    return [(p.name, json.loads(p.read_text("utf-8"))) for p in found]


def merge_fragments(
    fragments: list[tuple[str, dict[str, Any]]], *, label: str = "shipped"
) -> dict[str, Any]:
    """One document from per-family fragments; a model or family defined twice is an error."""
    document: dict[str, Any] = {
        "catalog": label,
        "currency": "USD",
        "families": {},
        "models": {},
        "retired": {},
    }
    for name, fragment in fragments:
        if not isinstance(fragment, dict):
            raise CatalogError(f"{name}: a fragment must be a JSON object")
        unknown = set(fragment) - {"family", "families", "models", "retired"}
        if unknown:
            raise CatalogError(f"{name}: unknown member(s) {sorted(unknown)}")
        families = fragment.get("family", fragment.get("families")) or {}
        for section, items in (
            ("families", families),
            ("models", fragment.get("models") or {}),
            ("retired", fragment.get("retired") or {}),
        ):
            if not isinstance(items, dict):
                raise CatalogError(f"{name}: {section} must be an object")
            for key, value in items.items():
                if key in document[section]:
                    raise CatalogError(f"{name}: {section}.{key} is defined twice")
                document[section][key] = value
    return document


def build_document(folder: Path | None = None, *, label: str = "shipped") -> dict[str, Any]:
    """The document of every family file present (the package's, unless `folder`)."""
    return merge_fragments(_fragments(folder), label=label)


def price_micros(text: Any, where: str) -> int:
    """A decimal USD string as integer micro-dollars (never through a float)."""
    if not isinstance(text, str):
        raise CatalogError(f"{where}: a price must be a decimal string, got {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CatalogError(f"{where}: {text!r} is not a decimal price") from None
    if not value.is_finite() or value < 0:
        raise CatalogError(f"{where}: {text!r} must be a finite price >= 0")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PRICE_DECIMALS:
        raise CatalogError(f"{where}: {text!r} has more than {MAX_PRICE_DECIMALS} decimals")
    return int(value * 1_000_000)


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise CatalogError(f"{where}: must be a JSON Schema object")
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        path = "/".join(str(p) for p in exc.instance_path) or "(root)"
        raise CatalogError(f"{where}: invalid JSON Schema at {path}: {exc.message}") from None
    except jsonschema_rs.ReferencingError as exc:
        raise CatalogError(f"{where}: invalid JSON Schema: {exc}") from None


def _check_pricing(pricing: Any, where: str) -> None:
    if not isinstance(pricing, dict):
        raise CatalogError(f"{where}: must be an object")
    unknown = set(pricing) - PRICING_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown pricing member(s) {sorted(unknown)}")
    kind = pricing.get("kind")
    if kind not in PRICING_KINDS:
        raise CatalogError(f"{where}.kind: unknown pricing kind {kind!r}; one of {PRICING_KINDS}")
    _check_prices(pricing, kind, where)
    for i, variant in enumerate(pricing.get("variants") or []):
        at = f"{where}.variants[{i}]"
        if not isinstance(variant, dict) or "when" not in variant:
            raise CatalogError(f"{at}: a variant needs 'when' (a JSON Schema on the body)")
        _check_schema(variant["when"], f"{at}.when")
        _check_prices(variant, kind, at)
    video = pricing.get("input_video")
    if video is not None:
        if not isinstance(video, dict) or ("rate" in video) == ("rates" in video):
            raise CatalogError(f"{where}.input_video: needs exactly one of 'rate' or 'rates'")
        if "rate" in video:
            price_micros(video["rate"], f"{where}.input_video.rate")
        else:
            _rates(video["rates"], f"{where}.input_video.rates")
        if "when" in video:
            _check_schema(video["when"], f"{where}.input_video.when")
    per_image = pricing.get("per_image")
    if per_image is not None:
        free = per_image.get("free") if isinstance(per_image, dict) else None
        if not isinstance(free, int) or free < 0 or not per_image.get("fields"):
            raise CatalogError(f"{where}.per_image: needs 'free' (an integer >= 0) and 'fields'")
        price_micros(per_image.get("fee"), f"{where}.per_image.fee")
    if pricing.get("billed_seconds") not in (None, "reference_video"):
        raise CatalogError(f"{where}.billed_seconds: only 'reference_video' is known")


def _rates(rates: Any, where: str) -> None:
    if not isinstance(rates, dict) or not rates:
        raise CatalogError(f"{where}: must be a non-empty object of prices by resolution")
    for res, text in rates.items():
        price_micros(text, f"{where}.{res}")


def _check_prices(holder: dict[str, Any], kind: str, where: str) -> None:
    if kind == "per_second":
        _rates(holder.get("rates"), f"{where}.rates")
    elif kind == "per_clip":
        tiers = holder.get("tiers")
        if not isinstance(tiers, dict) or not tiers:
            raise CatalogError(
                f"{where}.tiers: must be an object of resolution -> duration -> price"
            )
        for res, by_duration in tiers.items():
            if not isinstance(by_duration, dict) or not by_duration:
                raise CatalogError(f"{where}.tiers.{res}: must be an object of duration -> price")
            for seconds, text in by_duration.items():
                if not (str(seconds).isascii() and str(seconds).isdigit()):
                    raise CatalogError(f"{where}.tiers.{res}: {seconds!r} is not a duration")
                price_micros(text, f"{where}.tiers.{res}.{seconds}")
    else:
        price_micros(holder.get("price"), f"{where}.price")


def _check_defaults(model: dict[str, Any], where: str) -> None:
    defaults = model.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CatalogError(f"{where}.defaults: must be an object")
    props = model["body"].get("properties") or {}
    for name, value in defaults.items():
        prop = props.get(name)
        if value is None or not isinstance(prop, dict):
            continue
        try:
            valid = jsonschema_rs.Draft202012Validator(prop).is_valid(value)
        except (jsonschema_rs.ValidationError, ValueError):
            valid = False
        if not valid:
            raise CatalogError(
                f"{where}.defaults.{name}: {value!r} is not allowed by body.properties.{name}"
            )


def _check_chain(model_id: str, model: dict[str, Any], models: dict[str, Any], where: str) -> None:
    actions = model.get("actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        raise CatalogError(f"{where}.actions: a non-empty list of action names")
    chain = model.get("chain")
    takes_ref = "ref_task_id" in (model["body"].get("properties") or {})
    if chain is None:
        # `edit`/`extend` may work on a media field instead (Kling, Seedance): only a body
        # that takes ref_task_id needs a chain rule.
        if takes_ref:
            raise CatalogError(f"{where}.chain: ref_task_id needs a chain rule (chain is null)")
        return
    if not isinstance(chain, dict) or not chain.get("actions") or not chain.get("source_models"):
        raise CatalogError(f"{where}.chain: needs 'actions' and 'source_models'")
    if not takes_ref:
        raise CatalogError(f"{where}.chain: the body schema has no ref_task_id property")
    for action in chain["actions"]:
        if action not in actions:
            raise CatalogError(
                f"{where}.chain.actions: {action!r} is not one of the model's actions"
            )
    for source in chain["source_models"]:
        if source not in models:
            raise CatalogError(f"{where}.chain.source_models: unknown model {source!r}")


def check_document(document: Any) -> None:
    """Refuse a document whole (CatalogError naming the first fault), or return."""
    if not isinstance(document, dict):
        raise CatalogError("catalog: the document must be a JSON object")
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogError("models: must be a non-empty object")
    if document.get("currency", "USD") != "USD":
        raise CatalogError("currency: only USD is known")
    families = document.get("families") or {}
    retired = document.get("retired") or {}
    if not isinstance(families, dict) or not isinstance(retired, dict):
        raise CatalogError("families and retired: must be objects")
    for model_id, model in models.items():
        where = f"models.{model_id}"
        if not isinstance(model, dict):
            raise CatalogError(f"{where}: must be an object")
        unknown = set(model) - MODEL_KEYS
        if unknown:
            raise CatalogError(f"{where}: unknown member(s) {sorted(unknown)}")
        for required in ("family", "actions", "body", "pricing"):
            if required not in model:
                raise CatalogError(f"{where}.{required}: missing")
        if families and model["family"] not in families:
            raise CatalogError(f"{where}.family: {model['family']!r} is not in families")
        if model_id in retired:
            raise CatalogError(f"{where}: also listed in retired")
        _check_schema(model["body"], f"{where}.body")
        props = model["body"].get("properties") or {}
        if model["body"].get("type") != "object" or not isinstance(props, dict):
            raise CatalogError(f"{where}.body: must be an object schema with properties")
        leaked = [f for f in GATEWAY_FIELDS if f in props]
        if leaked:
            raise CatalogError(f"{where}.body.properties.{leaked[0]}: a gateway field")
        _check_defaults(model, where)
        _check_chain(model_id, model, models, where)
        _check_pricing(model["pricing"], f"{where}.pricing")
        duration = model.get("duration") or {}
        if not isinstance(duration, dict) or not isinstance(duration.get("max", 0), int):
            raise CatalogError(f"{where}.duration: needs an integer 'max'")
        media = model.get("media") or {}
        for key in ("images", "videos", "audio"):
            if not isinstance(media.get(key, []), list):
                raise CatalogError(f"{where}.media.{key}: must be a list of field names")
    for retired_id, entry in retired.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("on"), str):
            raise CatalogError(f"retired.{retired_id}.on: the date it was retired (YYYY-MM-DD)")
