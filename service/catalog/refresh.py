"""Every API and worker process on the catalog in force, within QGW_CATALOG_REFRESH_SECONDS.

The catalog in force is the newest document in `catalog_documents` (PUT /admin/catalog),
or, with none, the process's own (`base`: the shipped one, or QGW_CATALOG_FILE). Each
process reads the newest digest on a timer (one indexed row; no listener connection to
keep); when it differs from the one in use, the document is read, compiled in a thread
(tens of milliseconds for every family: off the event loop, so requests keep flowing) and
the reference swapped whole (`on_change`). A request reads the reference once, so it is
checked and priced by one catalog from start to end.

A document this process cannot compile (one stored by a newer release, say) is refused
whole here too: the process keeps the catalog it has, logs why, and counts it
(qgw_catalog_load_failures_total); it is not tried again until another is put in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
import orjson

from service.catalog import repository as store
from service.catalog.document import CatalogError
from service.catalog.engine import Catalog, compile_catalog
from service.catalog.generations import GENERATIONS
from service.platform.metrics import CATALOG_INFO, CATALOG_LOAD_FAILURES, set_model_families

logger = logging.getLogger(__name__)


def model_families(catalog: Catalog) -> dict[str, str]:
    """Each model id's family: the catalog's models, its retired ids (their family as the
    document records it), and every generation's own Hailuo models. Tasks and charges keep
    the model id and a model belongs to one family, so reports and metrics derive it."""
    families = {
        model_id: str(entry["family"])
        for model_id, entry in catalog.retired.items()
        if isinstance(entry, dict) and entry.get("family")
    }
    for gen in GENERATIONS.values():
        families.update({spec.id: spec.family for spec in gen.models})
    families.update({model_id: entry.family for model_id, entry in catalog.models.items()})
    return families


def compile_text(text: str) -> Catalog:
    """A stored document's text, compiled (CatalogError when it cannot be)."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CatalogError(f"catalog: not a JSON document ({exc})") from None
    return compile_catalog(document)


class CatalogRefresher:
    """Keeps `current` on the catalog in force; `on_change` gets each new one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        base: Catalog,
        *,
        interval: float,
        on_change: Callable[[Catalog], None],
    ) -> None:
        self.base = base
        self.current = base
        self._pool = pool
        self._interval = interval
        self._on_change = on_change
        self._refused: str | None = None  # a digest that failed here: not retried
        self._task: asyncio.Task[None] | None = None
        CATALOG_INFO.labels(base.digest).inc()
        set_model_families(model_families(base))

    def adopt(self, catalog: Catalog) -> None:
        """Use `catalog` from now on (this process's requests read it from the next one)."""
        old = self.current
        if catalog.digest == old.digest:
            return
        self.current = catalog
        self._on_change(catalog)
        set_model_families(model_families(catalog))
        CATALOG_INFO.labels(old.digest).dec()
        CATALOG_INFO.labels(catalog.digest).inc()
        logger.info(
            "catalog in force",
            extra={"digest": catalog.digest, "previous": old.digest, "models": len(catalog.models)},
        )

    async def refresh(self) -> None:
        """One look at the database: adopt the catalog in force if it is not the one in use."""
        try:
            digest = await store.newest_digest(self._pool)
            if digest is None:
                self.adopt(self.base)
                return
            if digest in (self.current.digest, self._refused):
                return
            if digest == self.base.digest:
                self.adopt(self.base)
                return
            row = await store.newest(self._pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            CATALOG_LOAD_FAILURES.labels("database").inc()
            logger.warning("catalog refresh: database unavailable (%s)", type(exc).__name__)
            return
        if row is None:  # removed between the two reads: the next look sees what is left
            return
        try:
            catalog = await asyncio.to_thread(compile_text, row["document"])
        except CatalogError as exc:
            self._refused = row["digest"]
            CATALOG_LOAD_FAILURES.labels("invalid").inc()
            logger.error(
                "catalog in force refused here, the one in use kept",
                extra={"digest": row["digest"], "error": str(exc)},
            )
            return
        self._refused = None
        self.adopt(catalog)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="catalog-refresh")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception:  # a bug here must not stop the following looks
                CATALOG_LOAD_FAILURES.labels("error").inc()
                logger.exception("catalog refresh failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        CATALOG_INFO.labels(self.current.digest).dec()
