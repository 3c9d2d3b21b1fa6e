"""Alembic runs the migrations in plain SQL over asyncpg (through SQLAlchemy's asyncpg dialect)."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context


def _sqlalchemy_url(dsn: str) -> URL:
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return URL.create(
        "postgresql+asyncpg",
        username=parts.username,
        password=parts.password or None,
        host=parts.hostname or query.pop("host", None),
        port=parts.port,
        database=parts.path.lstrip("/") or None,
        query=query,
    )


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    dsn = context.config.attributes.get("database_url") or os.environ["QGW_DATABASE_URL"]
    engine = create_async_engine(_sqlalchemy_url(dsn))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


asyncio.run(_main())
