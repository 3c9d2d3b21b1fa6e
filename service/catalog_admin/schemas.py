"""The admin API's catalog documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CatalogInForce(BaseModel):
    """The catalog in force: the whole document and its digest. PUT it back, edited."""

    digest: str = Field(description="sha256 of the document's canonical JSON (sorted keys)")
    label: str | None = Field(None, description="The document's own `catalog` label")
    source: str = Field(
        description="`operator`: put in force with PUT /admin/catalog; `process`: no "
        "operator's document yet, the gateway's own (shipped, or QGW_CATALOG_FILE)"
    )
    updated_at: datetime | None = None
    updated_by: str | None = Field(None, description="The actor who put it in force")
    models: int = Field(description="How many models it governs")
    document: dict[str, Any] = Field(
        description="The catalog document (docs/catalog-format.md); prices are decimal USD "
        "strings, as GET /v1/models shows them"
    )


class CatalogReplace(BaseModel):
    """A catalog document to put in force: GET /admin/catalog's answer, edited, is one."""

    # GET's other members (source, models, ...) may come back as they were: ignored.
    model_config = ConfigDict(extra="ignore")

    document: dict[str, Any] = Field(description="The whole new document")
    digest: str | None = Field(
        None,
        description="The digest the edit started from (GET's). When given and another "
        "document was put in force since, the replacement is refused (409 catalog_conflict)",
    )


class CatalogReplaced(CatalogInForce):
    changed: bool = Field(description="false: the document was the one in force already")
    previous_digest: str
    changes: list[str] = Field(
        description="What it changes: models added, removed or retired, prices up or down "
        "by tier, rules changed (as `qingbo-gateway catalog diff` prints them)"
    )
