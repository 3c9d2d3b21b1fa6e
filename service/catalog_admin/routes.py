"""GET/PUT /admin/catalog (Bearer QGW_ADMIN_TOKEN): the catalog in force, and replacing it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service.audit.deps import AdminCtx
from service.catalog.refresh import CatalogRefresher
from service.catalog_admin import service
from service.catalog_admin.schemas import CatalogInForce, CatalogReplace, CatalogReplaced
from service.platform.errors import InvalidRequest, PayloadTooLarge, Unauthorized
from service.platform.openapi import error_responses
from service.web import admin_caller, body_reader, guarded_route, require_admin, shared

# The admin token first, then a document of at most QGW_MAX_CATALOG_BODY_BYTES: the whole
# catalog is larger than any other admin body (QGW_MAX_ADMIN_BODY_BYTES).
CatalogRoute = guarded_route(
    admin_caller, body_reader(lambda settings: settings.max_catalog_body_bytes)
)
router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], route_class=CatalogRoute
)


def _refresher(request: Request) -> CatalogRefresher:
    refresher: CatalogRefresher | None = shared(request).catalog_refresh
    assert refresher is not None, "open_resources starts the catalog refresher"
    return refresher


@router.get(
    "/catalog",
    response_model=CatalogInForce,
    summary="The catalog in force",
    responses=error_responses(Unauthorized),
)
async def get_catalog(request: Request, ctx: AdminCtx) -> Any:
    """The catalog in force as one JSON document with its digest; PUT it back, edited."""
    return await service.in_force(ctx.conn, _refresher(request))


@router.put(
    "/catalog",
    response_model=CatalogReplaced,
    summary="Replace the catalog in force",
    responses=error_responses(
        InvalidRequest,
        service.InvalidCatalog,
        Unauthorized,
        PayloadTooLarge,
        service.CatalogConflict,
    ),
)
async def put_catalog(request: Request, body: CatalogReplace, ctx: AdminCtx) -> Any:
    """Put a whole document in force (audited); a bad one is refused whole, naming what is
    wrong, and the old one stays. Every process uses it within QGW_CATALOG_REFRESH_SECONDS."""
    return await service.replace_catalog(
        ctx.conn,
        refresher=_refresher(request),
        document=body.document,
        expected_digest=body.digest,
        audit=ctx.audit,
    )
