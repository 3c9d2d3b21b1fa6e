"""Reading and replacing the catalog in force (GET/PUT /admin/catalog).

A replacement is checked and compiled whole before anything is written (a bad document
changes nothing; the 400 names the first fault, CatalogError's message), then stored as
the newest `catalog_documents` row with its audit entry in one transaction, then used by
this process at once and by every other within QGW_CATALOG_REFRESH_SECONDS
(service/catalog/refresh.py). Tasks already admitted keep the price and the digest they
were admitted with: nothing here touches a task.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from service.audit.service import AuditContext, record
from service.catalog import repository as store
from service.catalog.diff import diff_documents, summary
from service.catalog.document import CatalogError, canonical_json
from service.catalog.engine import Catalog, compile_catalog
from service.catalog.refresh import CatalogRefresher
from service.platform.errors import InvalidRequest, ServiceError


class InvalidCatalog(InvalidRequest):
    """A document that cannot be put in force: refused whole, naming what is wrong."""

    code = "invalid_catalog"


class CatalogConflict(ServiceError):
    """Another document was put in force since the one the edit started from."""

    status = 409
    code = "catalog_conflict"


# JSON Schema keywords that name another resource: the validator would fetch a remote one
# (from every process, at every compile), so a document keeps its references local.
REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
META_SCHEMA = "https://json-schema.org/draft/2020-12/schema"


def _remote_reference(value: Any, where: str) -> str | None:
    """The path of the first reference outside the document, if any."""
    if isinstance(value, dict):
        for key, item in value.items():
            at = f"{where}.{key}" if where else str(key)
            if key in REFERENCES and not (isinstance(item, str) and item.startswith("#")):
                return at
            if key == "$schema" and item != META_SCHEMA:
                return at
            found = _remote_reference(item, at)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _remote_reference(item, f"{where}[{i}]")
            if found:
                return found
    return None


def compile_document(document: Any) -> Catalog:
    """The document compiled, or InvalidCatalog naming the first fault."""
    remote = _remote_reference(document, "")
    if remote is not None:
        raise InvalidCatalog(
            f"{remote}: only references within the document (#...) and the 2020-12 "
            "meta-schema are allowed",
            param="document",
        )
    try:
        return compile_catalog(document)
    except CatalogError as exc:
        raise InvalidCatalog(str(exc), param="document") from None
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an integer orjson cannot write
        raise InvalidCatalog(f"catalog: cannot be used ({exc})", param="document") from None


async def in_force(conn: asyncpg.Connection, refresher: CatalogRefresher) -> dict[str, Any]:
    """The document in force (the database's newest, else this process's own)."""
    row = await store.newest(conn)
    if row is None:
        base = refresher.base
        return _shown(base.document, base.digest, source="process")
    document = orjson.loads(row["document"])
    return _shown(
        document,
        row["digest"],
        source="operator",
        updated_at=row["created_at"],
        updated_by=row["actor"],
    )


def _shown(document: dict[str, Any], digest: str, *, source: str, **more: Any) -> dict[str, Any]:
    return {
        "digest": digest,
        "label": document.get("catalog"),
        "source": source,
        "models": len(document.get("models") or {}),
        "document": document,
        "updated_at": None,
        "updated_by": None,
        **more,
    }


async def replace_catalog(
    conn: asyncpg.Connection,
    *,
    refresher: CatalogRefresher,
    document: dict[str, Any],
    expected_digest: str | None,
    audit: AuditContext,
) -> dict[str, Any]:
    """Put `document` in force (see the module's docstring); what it changed."""
    catalog = await asyncio.to_thread(compile_document, document)  # tens of ms: off the loop
    async with conn.transaction():
        await store.lock(conn)
        current = await in_force(conn, refresher)
        if expected_digest is not None and expected_digest != current["digest"]:
            raise CatalogConflict(
                f"digest: the catalog in force is {current['digest']}, not {expected_digest}: "
                "another document was put in force since; GET /admin/catalog and edit that",
                param="digest",
            )
        changes = diff_documents(current["document"], catalog.document)
        answer = {"previous_digest": current["digest"], "changes": [c.line() for c in changes]}
        if catalog.digest == current["digest"]:
            return {**current, **answer, "changed": False}
        row = await store.insert(
            conn,
            digest=catalog.digest,
            document=canonical_json(catalog.document).decode(),
            label=_label(catalog),
            actor=audit.actor,
        )
        await record(
            conn,
            audit,
            action="catalog.replace",
            target_type="catalog",
            target_id="catalog",
            before={"digest": current["digest"], "label": current["label"]},
            after={
                "digest": catalog.digest,
                "label": _label(catalog),
                "models": len(catalog.models),
                "changes": summary(changes),
            },
        )
    refresher.adopt(catalog)  # this process at once; the others at their next look
    shown = _shown(
        catalog.document,
        catalog.digest,
        source="operator",
        updated_at=row["created_at"],
        updated_by=row["actor"],
    )
    return {**shown, **answer, "changed": True}


def _label(catalog: Catalog) -> str | None:
    label = catalog.document.get("catalog")
    return str(label) if label is not None else None
