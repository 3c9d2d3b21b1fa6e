"""What the task domain works with: every shared client of the process, as the lifespan
(service/resources.py) or the worker's start-up built them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request

from service.archive.copier import Archiver
from service.catalog.engine import Catalog
from service.catalog.models import PriceTable
from service.catalog.refresh import CatalogRefresher
from service.config import Settings
from service.egress import DestinationPolicy
from service.quotas.limiter import RateLimiter
from service.tasks.admission_batch import AdmissionBatcher
from service.tasks.events import NotificationListener
from service.tasks.queue import DispatchKicker
from service.tasks.watching import Watching
from service.teams.key_cache import KeyCache
from service.teams.service import KnownKey
from service.upstream.client import QingboClient
from service.webhooks.delivery import WebhookSender


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    admissions: AdmissionBatcher  # fast admissions, gathered into shared statements
    redis: ArqRedis
    qingbo: QingboClient
    prices: PriceTable  # the April per-second table (a 2026-04 upstream charges it)
    # The catalog in force: every model's rules and prices, compiled once per document.
    # Read it once per request (a reference swapped whole when the document is replaced).
    catalog: Catalog
    kicker: DispatchKicker
    limiter: RateLimiter
    webhooks: WebhookSender
    events: NotificationListener | None = None  # API processes only
    watching: Watching | None = None  # API processes only: looks at tasks (tasks/watching.py)
    archive: Archiver | None = None  # with QGW_ARCHIVE_URL
    # Authenticated callers (API processes: trusted while `events` listens).
    keys: KeyCache[KnownKey] = field(default_factory=KeyCache)
    # What "now" is for budget windows; tests move it to cross window boundaries.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Follows the catalog operators put in force and swaps `catalog` (catalog/refresh.py).
    catalog_refresh: CatalogRefresher | None = None

    @property
    def egress(self) -> DestinationPolicy:
        """Where webhooks and downloads may go (one policy for both)."""
        return self.webhooks.policy


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


AppResources = Annotated[Resources, Depends(get_resources)]
