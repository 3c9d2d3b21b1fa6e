"""QGW_REDIS_URL as redis-py reads it, for every Redis client of the process: arq's pool
(and so the worker's), the rate limiter's own connection (which copies arq's), /readyz.

Against redis-servers of these tests' own: TLS only, its certificate signed by a private CA
that the URL names (`?ssl_ca_certs=`), and an ACL user whose password needs escaping in a
URL (it must reach Redis decoded). A CA that did not sign the server's certificate is
refused. The throwaway certificates come from the openssl command line.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import redis
from arq import create_pool

from service.app import create_app
from service.config import Settings
from service.platform.errors import RateLimited
from service.quotas.limits import Limits
from service.tasks.resources import Resources, open_resources, redis_settings
from tests.private_redis import PrivateRedis, acl_redis, tls_redis
from tests.quotas.certificates import Certificates, make_ca, make_certificates

ALICE = "alice"
# Every character a URL's user information must escape.
ALICE_PASSWORD = "p@ss:w/rd%?#"
ADMIN_PASSWORD = "admin-secret"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[PrivateRedis]:
    """TLS only (no plain port); clients are not asked for a certificate."""
    server = tls_redis(tmp_path_factory.mktemp("tls-redis"), certificates, client_certs=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """No anonymous access; `alice` signs in with a password a URL must escape."""
    server = acl_redis(
        tmp_path_factory.mktemp("acl-redis"),
        password=ADMIN_PASSWORD,
        user=ALICE,
        user_password=ALICE_PASSWORD,
    )
    server.start()
    yield server
    server.stop()


def tls_url(server: PrivateRedis, **query: str | Path) -> str:
    return f"rediss://127.0.0.1:{server.port}/0?{urlencode({k: str(v) for k, v in query.items()})}"


def acl_url(server: PrivateRedis, *, db: int) -> str:
    """As an operator writes it: the password percent-escaped."""
    return f"redis://{ALICE}:{quote(ALICE_PASSWORD, safe='')}@127.0.0.1:{server.port}/{db}"


def admin(server: PrivateRedis, db: int = 0) -> redis.Redis:
    return redis.Redis(port=server.port, db=db, socket_timeout=5, **server.ping)


def limits(rpm: int) -> Limits:
    return Limits(uuid.uuid4(), uuid.uuid4(), rpm, None)


@asynccontextmanager
async def serving(settings: Settings, redis_url: str) -> AsyncIterator[tuple[Resources, Any]]:
    """The API (its lifespan: open_resources) on `redis_url`, and a client of it."""
    app = create_app(settings.model_copy(update={"redis_url": redis_url}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield app.state.resources, http


async def uses_redis(res: Resources, http: httpx.AsyncClient) -> None:
    """arq's pool, the rate limiter's connection and /readyz all reach the server."""
    assert await res.redis.ping()
    job = await res.redis.enqueue_job("no_such_function", _queue_name="qgw-test-redis-urls")
    assert job is not None and await job.status() is not None
    one_a_minute = limits(1)
    await res.limiter.check(one_a_minute)
    with pytest.raises(RateLimited):  # the log is kept in that Redis: the second is counted
        await res.limiter.check(one_a_minute)
    ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["redis"] == "ok"


def test_the_url_carries_tls_files_and_decoded_credentials() -> None:
    url = f"rediss://{ALICE}:{quote(ALICE_PASSWORD, safe='')}@cache.internal:6380/4?" + urlencode(
        {
            "ssl_ca_certs": "/etc/qgw/ca.pem",
            "ssl_cert_reqs": "required",
            "ssl_certfile": "/etc/qgw/client.pem",
            "ssl_keyfile": "/etc/qgw/client.key",
        }
    )
    got = redis_settings(Settings(redis_url=url))
    assert (got.host, got.port, got.database, got.ssl) == ("cache.internal", 6380, 4, True)
    assert (got.username, got.password) == (ALICE, ALICE_PASSWORD)
    assert got.ssl_ca_certs == "/etc/qgw/ca.pem"
    assert got.ssl_cert_reqs == "required"
    assert (got.ssl_certfile, got.ssl_keyfile) == ("/etc/qgw/client.pem", "/etc/qgw/client.key")


def test_plain_and_unix_urls_read_as_before() -> None:
    plain = redis_settings(Settings(redis_url="redis://10.1.2.3:6390/7"))
    assert (plain.host, plain.port, plain.database, plain.ssl) == ("10.1.2.3", 6390, 7, False)
    assert plain.password is None and plain.unix_socket_path is None
    default = redis_settings(Settings(redis_url="redis://cache"))
    assert (default.host, default.port, default.database) == ("cache", 6379, 0)
    unix = redis_settings(Settings(redis_url="unix:///run/redis/redis.sock?db=2"))
    assert (unix.unix_socket_path, unix.database) == ("/run/redis/redis.sock", 2)


def test_a_query_parameter_arq_cannot_carry_is_refused_without_the_password() -> None:
    """Not silently dropped: the process would connect other than the URL says."""
    url = f"redis://{ALICE}:{quote(ALICE_PASSWORD, safe='')}@cache:6379/0?socket_timeout=3"
    with pytest.raises(ValueError, match="socket_timeout") as refused:
        redis_settings(Settings(redis_url=url))
    assert ALICE_PASSWORD not in str(refused.value)
    assert quote(ALICE_PASSWORD, safe="") not in str(refused.value)


async def test_a_tls_redis_with_a_private_ca_named_in_the_url(
    settings: Settings, tls: PrivateRedis, certificates: Certificates
) -> None:
    async with serving(settings, tls_url(tls, ssl_ca_certs=certificates.ca)) as (res, http):
        await uses_redis(res, http)
    assert admin(tls).exists("qgw-test-redis-urls")  # arq's job went to that server


async def test_the_urls_cert_reqs_is_followed(
    tls: PrivateRedis, certificates: Certificates, tmp_path: Path
) -> None:
    """`ssl_cert_reqs=none` (an operator's explicit choice) connects whatever signed the
    server's certificate; the same URL with `required` and another CA does not."""
    other = make_ca(tmp_path, "another-ca")
    lax = dataclasses.replace(
        redis_settings(Settings(redis_url=tls_url(tls, ssl_cert_reqs="none"))), conn_retries=0
    )
    pool = await create_pool(lax)
    try:
        assert await pool.ping()
    finally:
        await pool.aclose()
    strict = tls_url(tls, ssl_ca_certs=other, ssl_cert_reqs="required")
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await create_pool(
            dataclasses.replace(redis_settings(Settings(redis_url=strict)), conn_retries=0)
        )


async def test_a_ca_that_did_not_sign_the_server_is_refused(
    tls: PrivateRedis, tmp_path: Path
) -> None:
    other = make_ca(tmp_path, "another-ca")
    wrong = redis_settings(Settings(redis_url=tls_url(tls, ssl_ca_certs=other)))
    assert wrong.ssl_ca_certs == str(other)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await create_pool(dataclasses.replace(wrong, conn_retries=0))


async def test_an_acl_user_whose_password_is_escaped_in_the_url(
    settings: Settings, acl: PrivateRedis
) -> None:
    with pytest.raises(redis.AuthenticationError):  # the server does ask for a password
        redis.Redis(port=acl.port).ping()
    async with serving(settings, acl_url(acl, db=3)) as (res, http):
        assert await res.redis.execute_command("ACL", "WHOAMI") == b"alice"
        await uses_redis(res, http)
    assert admin(acl, db=3).exists("qgw-test-redis-urls")  # the URL's database


async def test_open_resources_on_the_acl_url_for_a_worker(
    settings: Settings, acl: PrivateRedis
) -> None:
    """The worker's start-up opens the same resources (without listening)."""
    async with open_resources(settings.model_copy(update={"redis_url": acl_url(acl, db=0)})) as res:
        assert await res.redis.execute_command("ACL", "WHOAMI") == b"alice"
        await res.limiter.check(limits(5))
        names = {c["name"]: c["user"] for c in admin(acl).client_list() if c.get("name")}
        assert names.get("qgw-rate-limits") == ALICE
