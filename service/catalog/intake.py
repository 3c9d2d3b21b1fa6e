"""Every model's request, checked and priced through the catalog in force.

One entry point for the gateway and the simulator: `normalize_task` looks the model up
(retired ids refused with `model_retired`), then
- a Hailuo model the configured generation translates for goes through rules.py (either
  generation's form, translated), and the body it would send is checked once more against
  the model's catalog schema where that generation offers the catalog (2026-09);
- any other catalog model is checked against its JSON Schema as sent: `asset://` media
  refused, media values checked (URL or Base64 image), strings storable.
Which generation offers what, and which prices apply, is data (generations.py), not
branches here.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from service.catalog.engine import Catalog, ModelEntry
from service.catalog.errors import AssetReferenceUnsupported
from service.catalog.generations import Generation, all_model_ids
from service.catalog.price_table import PriceTable
from service.catalog.rules import (
    DEFAULT_MAX_IMAGE_BYTES,
    NormalizedTask,
    check_http_url,
    check_image,
    check_metadata,
    normalize,
    upstream_body,
)
from service.catalog.schemas import TaskRequest
from service.catalog.statuses import TERMINAL_STATUSES
from service.platform.errors import InvalidRequest, PriceNotConfigured

ASSET_SCHEME = "asset://"
# Stored with a task's request, never sent upstream: the catalog that priced it.
CATALOG_DIGEST_KEY = "catalog_digest"
PRIVATE_KEYS = ("metadata", CATALOG_DIGEST_KEY)
# Models some generation translates for (rules.py): stored in their canonical form.
HAILUO_IDS = frozenset(all_model_ids())


def pydantic_refusal(exc: ValidationError) -> InvalidRequest:
    """The first pydantic error as the API names it (service/errors.validation_error)."""
    from fastapi.exceptions import RequestValidationError

    from service.platform.errors import validation_error

    return validation_error(RequestValidationError(exc.errors()))


def normalize_task(
    body: TaskRequest | dict[str, Any],
    gen: Generation,
    catalog: Catalog,
    *,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> NormalizedTask:
    """Check `body` for `gen` against `catalog`; a refusal names the field and changes nothing.
    The gateway's fields are TaskRequest's; the model's are checked by its rules (Hailuo's
    pydantic model, or the model's catalog schema)."""
    try:
        if not isinstance(body, TaskRequest):
            body = TaskRequest.model_validate(body)
        model_id = body.model
        hailuo = gen.offers(model_id)
        entry = _entry(catalog, model_id, gen, hailuo)
        if not hailuo:
            assert entry is not None
            return _normalize_catalog(body, entry, max_image_bytes=max_image_bytes)
        req = body.hailuo()
    except ValidationError as exc:
        raise pydantic_refusal(exc) from None
    task = normalize(req, gen, max_image_bytes=max_image_bytes)
    if entry is not None and gen.offers_catalog:
        entry.check(task.pricing_body)  # the vendor's rules in force, on what is sent
    return task


def _entry(catalog: Catalog, model_id: str, gen: Generation, hailuo: bool) -> ModelEntry | None:
    if hailuo and model_id not in catalog.models and model_id not in catalog.retired:
        return None  # a generation's own model the document leaves out: its rules only
    entry = catalog.entry(model_id)  # retired / unknown refused here
    if not hailuo and not gen.offers_catalog:
        offered = ", ".join(spec.id for spec in gen.models)
        raise InvalidRequest(
            f"model: {model_id} is not offered by the configured Qingbo API ({gen.version}); "
            f"available: {offered}",
            param="model",
        )
    return entry


def _normalize_catalog(
    body: TaskRequest, entry: ModelEntry, *, max_image_bytes: int
) -> NormalizedTask:
    vendor = body.vendor_fields()
    _check_strings(vendor, "")
    _refuse_assets(vendor, entry)
    entry.check(vendor)
    _check_media(vendor, entry, max_image_bytes)
    action = vendor.get("action") or entry.actions[0]
    ref = vendor.get("ref_task_id")  # whether an action needs one is the schema's rule
    request: dict[str, Any] = {"model": entry.id, "action": action, **vendor}
    callback_url = body.callback_url
    if callback_url is not None:
        check_http_url(callback_url, param="callback_url")
    if body.metadata:
        request["metadata"] = check_metadata(body.metadata)
    events = body.callback_events
    return NormalizedTask(
        model_id=entry.id,
        family=entry.family,
        request=request,
        upstream=upstream_of(request),
        callback_url=callback_url,
        callback_events=list(dict.fromkeys(events))
        if events is not None
        else list(TERMINAL_STATUSES),
        priority=body.priority,
        pricing_body=vendor,
        ref_task_id=str(ref) if ref else None,
    )


def upstream_of(request: dict[str, Any]) -> dict[str, Any]:
    """A catalog model's body as Qingbo takes it: the request minus what is the gateway's."""
    return {k: v for k, v in request.items() if k not in PRIVATE_KEYS}


def build_upstream(
    request: dict[str, Any], gen: Generation, *, ref_upstream_id: str | None = None
) -> dict[str, Any]:
    """The exact body `gen` is sent for a stored request (at submission), or InvalidRequest
    naming what that generation cannot honour."""
    if request["model"] in HAILUO_IDS:
        return upstream_body(request, gen)  # a Hailuo request, in the canonical form
    if not gen.offers_catalog:
        raise InvalidRequest(
            f"model: {request['model']} is not offered by the configured Qingbo API "
            f"({gen.version})",
            param="model",
        )
    body = upstream_of(request)
    if ref_upstream_id is not None:
        body["ref_task_id"] = ref_upstream_id  # Qingbo knows its own id, not the gateway's
    return body


def price_micros(task: NormalizedTask, gen: Generation, catalog: Catalog, april: PriceTable) -> int:
    """The reservation: the most the task can cost, by the prices `gen` is charged."""
    if gen.prices_from == "april_per_second":
        if not april.is_priced(task.model_id):
            raise PriceNotConfigured(
                f"model: {task.model_id} has no price configured (set QGW_PRICE_TABLE to price it)",
                param="model",
            )
        request = task.request
        return april.price_micros(task.model_id, request["resolution"], request["duration"])
    entry = catalog.models.get(task.model_id)
    if entry is None:
        raise PriceNotConfigured(
            f"model: {task.model_id} has no price in the catalog in force", param="model"
        )
    amount = entry.pricing.reserve(task.pricing_body)
    if amount <= 0:  # the ledger holds only positive reservations
        raise PriceNotConfigured(f"model: {task.model_id} prices this task at 0", param="model")
    return amount


def _check_strings(value: Any, where: str) -> None:
    """Every string storable in Postgres jsonb: no NUL, no lone surrogate."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidRequest(f"{where}: must not contain NUL characters", param=_top(where))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"{where}: must be valid Unicode", param=_top(where)) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(str(key), where or "body")
            _check_strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}[{i}]")


def _top(where: str) -> str:
    return where.split(".", 1)[0].split("[", 1)[0] or "body"


def _media_values(value: Any, name: str) -> list[tuple[str, str]]:
    """(location, string) of every string in a media field (lists and objects included)."""
    if isinstance(value, str):
        return [(name, value)]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in _media_values(v, f"{name}[{i}]")]
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _media_values(v, f"{name}.{k}")]
    return []


def _refuse_assets(vendor: dict[str, Any], entry: ModelEntry) -> None:
    for name in entry.media.fields:
        for where, text in _media_values(vendor.get(name), name):
            if text.strip().lower().startswith(ASSET_SCHEME):
                raise AssetReferenceUnsupported(
                    f"{where}: asset:// references are not supported through the gateway "
                    "(the vendor's asset library is shared by the whole company's key); "
                    "send a URL",
                    param=name,
                )


def _check_media(vendor: dict[str, Any], entry: ModelEntry, max_image_bytes: int) -> None:
    for name in entry.media.images:
        value = vendor.get(name)
        if isinstance(value, str):
            check_image(value, param=name, max_bytes=max_image_bytes)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    check_image(item, param=f"{name}[{i}]", max_bytes=max_image_bytes)
    for name in entry.media.videos + entry.media.audio:
        for where, text in _media_values(vendor.get(name), name):
            if where == name or (where.startswith(f"{name}[") and where.endswith("]")):
                check_http_url(text, param=name)  # a URL itself, not a label beside one
