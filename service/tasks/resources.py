"""What the task domain works with: every shared client of the process (pool, Redis,
httpx, the Qingbo client, the catalog, the caches), and `open_resources`, which builds and
closes them for any role (the API's lifespan, the worker's start-up, the CLI).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from fastapi import Depends, Request
from redis.asyncio.connection import SSLConnection, parse_url

from service.archive.copier import Archiver
from service.archive.store import open_store
from service.catalog.engine import Catalog, load_catalog
from service.catalog.price_table import PriceTable, load_price_table
from service.catalog.refresh import CatalogRefresher
from service.config import Settings
from service.platform.db import create_pool as create_db_pool
from service.platform.egress import DestinationPolicy
from service.quotas.limiter import RateLimiter
from service.tasks.admission_batch import AdmissionBatcher
from service.tasks.announce import archived_event
from service.tasks.notifications import NotificationListener
from service.tasks.queue import DispatchKicker
from service.tasks.watching import Watching
from service.teams.key_cache import AUTH_CHANNEL, KeyCache
from service.teams.service import KnownKey
from service.upstream.client import QingboClient, build_http_client, build_read_client
from service.upstream.quote import QuoteClient, build_quote_client
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
    # Task changes and key changes heard from Postgres (tasks/notifications.py).
    notifications: NotificationListener | None = None  # API processes only
    watching: Watching | None = None  # API processes only: looks at tasks (tasks/watching.py)
    archive: Archiver | None = None  # with QGW_ARCHIVE_URL
    # Authenticated callers (API processes: trusted while `notifications` listens).
    keys: KeyCache[KnownKey] = field(default_factory=KeyCache)
    # What "now" is for budget windows; tests move it to cross window boundaries.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Follows the catalog operators put in force and swaps `catalog` (catalog/refresh.py).
    catalog_refresh: CatalogRefresher | None = None
    # The vendor's public quote, asked before admitting a task priced on input media
    # (tasks/quoting.py); None with QGW_QUOTE_BEFORE_ADMISSION=off.
    quotes: QuoteClient | None = None

    @property
    def egress(self) -> DestinationPolicy:
        """Where webhooks and downloads may go (one policy for both)."""
        return self.webhooks.policy


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


AppResources = Annotated[Resources, Depends(get_resources)]


logger = logging.getLogger(__name__)


# What QGW_REDIS_URL's query may say: the options arq's RedisSettings carries to redis-py.
# Anything else redis-py reads from a URL (socket_timeout, health_check_interval, ...) arq
# cannot pass on, so such a URL is refused rather than connected other than it says.
_URL_OPTIONS = {
    "db": "database",
    "ssl_ca_certs": "ssl_ca_certs",
    "ssl_ca_data": "ssl_ca_data",
    "ssl_cert_reqs": "ssl_cert_reqs",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_check_hostname": "ssl_check_hostname",
    "max_connections": "max_connections",
    "retry_on_timeout": "retry_on_timeout",
}


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's settings for QGW_REDIS_URL, read by redis-py's own parser (as `Redis.from_url`
    reads it): arq's `from_dsn` drops the `ssl_*` options (a private CA, client
    certificates) and does not percent-decode the user name and password. Every Redis
    client of the process follows these: arq's pool, the worker's, and the rate limiter's
    connection, which copies arq's (quotas/pipe.py)."""
    parsed: dict[str, Any] = dict(parse_url(settings.redis_url))
    connection_class = parsed.pop("connection_class", None)
    found = RedisSettings(
        host=parsed.pop("host", "localhost"),
        port=parsed.pop("port", 6379),
        unix_socket_path=parsed.pop("path", None),
        username=parsed.pop("username", None),
        password=parsed.pop("password", None),
        ssl=connection_class is not None and issubclass(connection_class, SSLConnection),
    )
    unsupported = sorted(set(parsed) - set(_URL_OPTIONS))
    if unsupported:  # names only: the URL itself may carry a password
        raise ValueError(
            f"QGW_REDIS_URL: {', '.join(unsupported)} not supported in the URL's query "
            f"(supported: {', '.join(_URL_OPTIONS)})"
        )
    return dataclasses.replace(found, **{_URL_OPTIONS[k]: v for k, v in parsed.items()})


@asynccontextmanager
async def open_resources(
    settings: Settings, *, listen_for_notifications: bool = False
) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        prices = load_price_table(settings.price_table)
        catalog = load_catalog(settings.catalog_file)
        # An API process (the one that listens) answers 503 when no connection comes free
        # in time; a worker's jobs wait their turn.
        api_process = listen_for_notifications
        pool = await create_db_pool(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            acquire_timeout=settings.db_acquire_timeout_seconds if api_process else None,
        )
        stack.push_async_callback(pool.close)
        redis = await create_pool(
            redis_settings(settings), default_queue_name=settings.arq_queue_name
        )
        stack.push_async_callback(redis.aclose)
        http = build_http_client(
            timeout=settings.upstream_timeout_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
        )
        stack.push_async_callback(http.aclose)
        reads = build_read_client(
            timeout=settings.upstream_timeout_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
        )
        stack.push_async_callback(reads.aclose)
        qingbo = QingboClient(
            http,
            reads=reads,
            base_url=settings.qingbo_base_url,
            api_key=settings.qingbo_api_key.get_secret_value(),
        )
        webhooks = WebhookSender(settings)
        stack.push_async_callback(webhooks.aclose)
        notifications = None
        watching = None
        check = settings.listener_check_seconds
        keys: KeyCache[KnownKey] = KeyCache(trust_seconds=3 * check)
        if listen_for_notifications:
            notifications = NotificationListener(
                settings.database_url,
                also={AUTH_CHANNEL: keys.forget_all},
                on_up=keys.trust,
                on_down=keys.distrust,
                on_alive=keys.proven_alive,
                check_seconds=check,
            )
            await notifications.start()
            stack.push_async_callback(notifications.close)
            watching = Watching(
                redis, settings.arq_queue_name, ttl_seconds=settings.watch_ttl_seconds
            )
            watching.start()
            stack.push_async_callback(watching.close)
        kicker = DispatchKicker(redis, settings.arq_queue_name)
        kicker.start()
        stack.push_async_callback(kicker.close)
        limiter = RateLimiter(
            redis,
            prefix=f"{settings.arq_queue_name}:rpm-log",  # lists (zsets were under :rpm)
            on_error=settings.rate_limit_on_redis_error,
        )
        stack.push_async_callback(limiter.aclose)
        archive = None
        if not settings.archive_url:
            logger.warning(
                "archive off: QGW_ARCHIVE_URL is not set, so paid videos are not kept once "
                'Qingbo deletes them (README "Archive")'
            )
        else:
            archive = Archiver(
                settings,
                open_store(settings.archive_url),
                webhooks.policy,
                on_archived=archived_event,
            )
            stack.push_async_callback(archive.aclose)
        admissions = AdmissionBatcher(pool)
        stack.push_async_callback(admissions.close)
        quotes = None
        if settings.quote_before_admission != "off":
            quotes = build_quote_client()
            stack.push_async_callback(quotes.aclose)
        resources = Resources(
            settings=settings,
            pool=pool,
            admissions=admissions,
            redis=redis,
            qingbo=qingbo,
            prices=prices,
            catalog=catalog,
            kicker=kicker,
            limiter=limiter,
            webhooks=webhooks,
            notifications=notifications,
            watching=watching,
            archive=archive,
            keys=keys,
            quotes=quotes,
        )
        await _follow_catalog(stack, resources)
        yield resources


async def _follow_catalog(stack: AsyncExitStack, resources: Resources) -> None:
    """Start on the catalog in force (an operator's, else this process's own) and follow it
    (service/catalog/refresh.py)."""
    refresher = CatalogRefresher(
        resources.pool,
        resources.catalog,
        interval=resources.settings.catalog_refresh_seconds,
        on_change=lambda catalog: setattr(resources, "catalog", catalog),
    )
    resources.catalog_refresh = refresher
    await refresher.refresh()
    refresher.start()
    stack.push_async_callback(refresher.close)
