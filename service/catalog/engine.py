"""The compiled catalog: one immutable `Catalog` per document, built by `compile_catalog`.

Everything a request needs is compiled once per document (each model's JSON Schema
validator, its pricing in micro-dollars), never per request. A process holds the catalog
in force as a plain reference (`Resources.catalog`); replacing the document means
compiling a new `Catalog` and swapping that reference, so a request keeps the one it
started with and nothing module-global has to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from service.catalog.document import (
    CatalogError,
    build_document,
    check_document,
    digest,
)
from service.catalog.errors import ModelRetired
from service.catalog.pricing import Pricing, compile_pricing
from service.catalog.validation import refusal
from service.platform.errors import InvalidRequest

FAMILY_PREFIX = "family:"


@dataclass(frozen=True)
class Chain:
    """Actions that take `ref_task_id`: which earlier models may be their source, what the
    source must have been, and which of its fields the new task is priced on."""

    actions: tuple[str, ...]
    source_models: tuple[str, ...]
    source_rules: dict[str, Any]
    inherit: tuple[str, ...]


@dataclass(frozen=True)
class Media:
    images: tuple[str, ...]
    videos: tuple[str, ...]
    audio: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.images + self.videos + self.audio


@dataclass(frozen=True)
class ModelEntry:
    id: str
    family: str
    title: str
    actions: tuple[str, ...]
    chain: Chain | None
    defaults: dict[str, Any]
    schema: dict[str, Any]
    validator: jsonschema_rs.Draft202012Validator = field(repr=False)
    media: Media
    pricing: Pricing
    hold_settle: bool
    retired_on: str | None
    raw_pricing: dict[str, Any] = field(default_factory=dict, repr=False)

    def check(self, body: dict[str, Any]) -> None:
        """Refuse `body` (the vendor fields, without `model`) naming the field, or return."""
        if not self.validator.is_valid(body):  # the fast answer for the common valid body
            raise refusal(self.schema, list(self.validator.iter_errors(body)))

    def with_defaults(self, body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in self.defaults.items() if v is not None} | body


@dataclass(frozen=True)
class Catalog:
    document: dict[str, Any] = field(repr=False)
    digest: str
    models: dict[str, ModelEntry] = field(repr=False)
    families: dict[str, Any] = field(repr=False)
    retired: dict[str, Any] = field(repr=False)

    def entry(self, model_id: str, *, today: date | None = None) -> ModelEntry:
        """The model, or model_retired (naming the date) / invalid_request naming `model`."""
        retired = self.retired.get(model_id)
        if retired is not None:
            raise ModelRetired(
                f"model: {model_id} was retired by Qingbo on {retired['on']}"
                + (f" ({retired['note']})" if retired.get("note") else ""),
                param="model",
                extra={"retired_on": retired["on"]},
            )
        entry = self.models.get(model_id)
        if entry is None:
            raise InvalidRequest(
                f"model: unknown model {model_id!r}; GET /v1/models lists the models",
                param="model",
            )
        on = entry.retired_on
        if on is not None and on <= (today or datetime.now(UTC).date()).isoformat():
            raise ModelRetired(
                f"model: {model_id} was retired by Qingbo on {on}",
                param="model",
                extra={"retired_on": on},
            )
        return entry

    def knows(self, name: str) -> bool:
        """A model id or `family:<key>` an allow-list may name."""
        if name.startswith(FAMILY_PREFIX):
            return name.removeprefix(FAMILY_PREFIX) in self.families
        return name in self.models

    def canonical(self) -> bytes:
        return orjson.dumps(self.document, option=orjson.OPT_SORT_KEYS)


def allowed(allow_list: list[str] | None, *, model_id: str, family: str) -> bool:
    """Whether a team's allow-list (model ids and `family:<key>` entries) admits the model."""
    if allow_list is None:
        return True
    return model_id in allow_list or f"{FAMILY_PREFIX}{family}" in allow_list


def _compile_model(model_id: str, raw: dict[str, Any]) -> ModelEntry:
    where = f"models.{model_id}"
    chain_raw = raw.get("chain")
    chain = None
    if chain_raw is not None:
        chain = Chain(
            actions=tuple(chain_raw["actions"]),
            source_models=tuple(chain_raw["source_models"]),
            source_rules=dict(chain_raw.get("source_rules") or {}),
            inherit=tuple(chain_raw.get("inherit") or ()),
        )
    media = raw.get("media") or {}
    return ModelEntry(
        id=model_id,
        family=raw["family"],
        title=raw.get("title") or model_id,
        actions=tuple(raw["actions"]),
        chain=chain,
        defaults=dict(raw.get("defaults") or {}),
        schema=raw["body"],
        validator=jsonschema_rs.Draft202012Validator(raw["body"]),
        media=Media(
            images=tuple(media.get("images") or ()),
            videos=tuple(media.get("videos") or ()),
            audio=tuple(media.get("audio") or ()),
        ),
        pricing=compile_pricing(raw, f"{where}.pricing"),
        raw_pricing=raw["pricing"],
        hold_settle=bool(raw.get("hold_settle")),
        retired_on=raw.get("retired_on"),
    )


def compile_catalog(document: dict[str, Any]) -> Catalog:
    """The one way to a Catalog: the document is checked whole first (CatalogError)."""
    check_document(document)
    try:
        models = {mid: _compile_model(mid, raw) for mid, raw in document["models"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"catalog: cannot compile: {exc!r}") from None
    return Catalog(
        document=document,
        digest=digest(document),
        models=models,
        families=dict(document.get("families") or {}),
        retired=dict(document.get("retired") or {}),
    )


def load_catalog(path: Path | None = None) -> Catalog:
    """The document at `path` (one whole JSON document, QGW_CATALOG_FILE), else the
    shipped one built from the family files."""
    if path is None:
        return shipped_catalog()
    try:
        document = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read a JSON document ({exc})") from None
    return compile_catalog(document)


@lru_cache(maxsize=1)
def shipped_catalog() -> Catalog:
    """The package's own document (cached: it is the same bytes for the process's life)."""
    return compile_catalog(build_document())
