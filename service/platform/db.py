"""The asyncpg pool (JSON codecs included) and Alembic migrations."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "alembic"

Connection = asyncpg.Connection
Pool = asyncpg.Pool


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _reset_nothing(conn: asyncpg.Connection) -> None:
    """Release hook: skip asyncpg's per-release RESET ALL / UNLISTEN round trip.

    The gateway keeps no session state (no SET, LISTEN, session advisory locks or
    cursors); asyncpg itself still rolls back an open transaction and drops listeners.
    """


T = TypeVar("T")


class PoolTimeout(Exception):
    """No pooled connection came free within the pool's acquire timeout."""


# The database errors that mean "not now" (restarting, failing over, out of connections),
# as opposed to a wrong statement: worth another try, and a 503 to a caller.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    PoolTimeout,
)


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg is untyped here
    """A pool whose acquire waits at most `acquire_timeout` seconds unless told otherwise,
    then raises PoolTimeout: a request must not wait for ever behind stuck ones (the API
    answers it 503 with Retry-After). None waits as long as it takes (the worker's jobs)."""

    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Acquiring(self, timeout if timeout is not None else self.acquire_timeout)


class _Acquiring:
    """What `pool.acquire()` returns, awaited or used as `async with`, as asyncpg's own."""

    def __init__(self, pool: BoundedPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def _get(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.Pool.acquire(self._pool, timeout=self._timeout)
        except TimeoutError:
            if self._timeout is None:  # a connect that timed out, not a wait for a free one
                raise
            raise PoolTimeout(f"no database connection free within {self._timeout:g} s") from None
        return conn

    def __await__(self) -> Any:
        return self._get().__await__()

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._get()
        return self._conn

    async def __aexit__(self, *_exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


class OnDemandConnection:
    """A request's pooled connection, which it gives back while it waits on something
    that is not the database (a stalled Redis, a task's outcome) and takes again after:
    a slow dependency must not drain the pool that every other request needs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self._conn is None:
            self._conn = await self._pool.acquire()
        return self._conn

    async def __aenter__(self) -> OnDemandConnection:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()

    async def release(self) -> None:
        if self._conn is not None:
            held, self._conn = self._conn, None
            await self._pool.release(held)

    async def without(self, awaitable: Awaitable[T], *, hold_seconds: float) -> T:
        """Await `awaitable`; if it takes longer than `hold_seconds`, the connection is
        given back meanwhile (the next `get` takes one again)."""
        if self._conn is None:
            return await awaitable
        waiting = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({waiting}, timeout=hold_seconds)
        if done:
            return waiting.result()
        await self.release()
        return await waiting


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 20, acquire_timeout: float | None = None
) -> asyncpg.Pool:
    # asyncpg.create_pool(...) is this `Pool(...)`, awaited, with these same defaults; the
    # subclass only bounds acquire. (Every test builds a pool: a changed constructor fails.)
    pool = BoundedPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset_nothing,
        command_timeout=60,
        acquire_timeout=acquire_timeout,
        connect=None,
        setup=None,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    await pool
    return pool


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.attributes["database_url"] = database_url
    return cfg


def _script_location() -> Path:
    """alembic/ beside service/ in a checkout; in the image, /app/alembic (the workdir)."""
    for candidate in (MIGRATIONS_DIR, Path.cwd() / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("alembic/ migrations not found beside service/ or in the working directory")


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the schema (blocking; run it outside an event loop)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def schema_status(current: str | None) -> str:
    """'ok' when the database is at this code's newest migration or a newer one.

    During a rolling upgrade the migration job runs first, so pods of the previous
    version meet a schema from the future: migrations only add, so they stay ready.
    """
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_script_location()))
    if current == script.get_current_head():
        return "ok"
    known = {rev.revision for rev in script.walk_revisions()}
    if current is None or current in known:
        return f"behind: at {current}, code expects {script.get_current_head()}"
    return "ok"


async def current_revision(conn: asyncpg.Connection) -> str | None:
    try:
        value = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    except asyncpg.UndefinedTableError:
        return None
    return str(value) if value is not None else None


SQL_SOURCES = Path(__file__).resolve().parents[1]  # service/: domain SQL files live below it


def sql_file_digest(name: str) -> str:
    """SHA-256 of the SQL source file `name` (a path under service/)."""
    return hashlib.sha256((SQL_SOURCES / name).read_bytes()).hexdigest()


def install_sql_file(name: str, *, sha256: str) -> None:
    """Run the SQL source file `name` (e.g. "budgets/sql/settle_task.sql") in a migration.

    The functions live in those files, reviewed as diffs of one file; a migration installs
    them. `sha256` names the version the migration was written for: a file changed since
    must be installed again by a new migration pinning its new digest (a test,
    tests/test_sql_files.py, fails until one does), so every database at head runs exactly
    the reviewed file. An older migration running a newer file is harmless: its functions
    are CREATE OR REPLACE, and the newer migration installs the same text again.
    """
    run_script((SQL_SOURCES / name).read_text())


def run_script(sql: str) -> None:
    """Run a multi-statement SQL script inside an Alembic migration.

    SQLAlchemy's asyncpg adapter prepares every statement, which allows one command each;
    the raw asyncpg connection's execute() without arguments takes a whole script.
    """
    from sqlalchemy.util import await_only

    from alembic import op

    driver: Any = op.get_bind().connection.driver_connection
    await_only(driver.execute(sql))
