"""The limiter's Redis connection against redis-servers of these tests' own: AUTH with a
password alone and with a user name, a wrong password, the URL's database, TLS with the
URL's CA (and a client certificate), a server that stops answering, a lost script and a
killed connection, on the hand-made pipe the limiter runs on."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import redis
from redis.asyncio import Redis

from service.platform.errors import UpstreamUnavailable
from service.quotas.limiter import RateLimiter
from service.quotas.limits import Limits
from service.quotas.pipe import RedisPipe, RedisRefused
from tests.private_redis import PrivateRedis, acl_redis, tls_redis
from tests.quotas.certificates import Certificates, make_ca, make_certificates

DEFAULT_PASSWORD = "default-secret"
ALICE = "alice"
# Characters a URL must escape: the password reaches Redis decoded.
ALICE_PASSWORD = "p@ss:w/rd%?#"
CLIENT_NAME = "qgw-test-pipe"


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A password for the default user, and an ACL user with its own."""
    server = acl_redis(
        tmp_path_factory.mktemp("auth-redis"),
        password=DEFAULT_PASSWORD,
        user=ALICE,
        user_password=ALICE_PASSWORD,
    )
    server.start()
    yield server
    server.stop()


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
def mutual_tls(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[PrivateRedis]:
    """TLS only, and every client must show a certificate the CA signed."""
    server = tls_redis(tmp_path_factory.mktemp("mtls-redis"), certificates, client_certs=True)
    server.start()
    yield server
    server.stop()


def url(
    server: PrivateRedis,
    *,
    user: str = "",
    password: str | None = None,
    db: int = 0,
    scheme: str = "redis",
    **query: str | Path,
) -> str:
    """A Redis URL as an operator writes it (QGW_REDIS_URL): credentials escaped."""
    credentials = ""
    if password is not None:
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    tail = f"?{urlencode({k: str(v) for k, v in query.items()})}" if query else ""
    return f"{scheme}://{credentials}127.0.0.1:{server.port}/{db}{tail}"


@asynccontextmanager
async def connected(redis_url: str, *, stall_seconds: float = 2.0) -> AsyncIterator[RedisPipe]:
    """The pipe (`call`) the limiter would use, for the server redis-py's client of
    `redis_url` talks to."""
    client = Redis.from_url(redis_url)
    pipe = RedisPipe(client, client_name=CLIENT_NAME, stall_seconds=stall_seconds)
    try:
        yield pipe
    finally:
        await pipe.aclose()
        await client.aclose()


@asynccontextmanager
async def limiter_for(
    redis_url: str, *, on_error: str = "deny", stall_seconds: float = 2.0
) -> AsyncIterator[RateLimiter]:
    client = Redis.from_url(redis_url)
    limiter = RateLimiter(
        client,
        prefix=f"qgw-test-pipe:{uuid.uuid4().hex[:8]}",
        on_error=on_error,
        stall_seconds=stall_seconds,
    )
    try:
        yield limiter
    finally:
        await limiter.aclose()
        await client.aclose()


def admin(server: PrivateRedis, db: int = 0) -> redis.Redis:
    """A plain client that sees what the pipe did, in database `db`."""
    return redis.Redis(port=server.port, db=db, socket_timeout=5, **server.ping)


def names_of_users(server: PrivateRedis) -> dict[str, str]:
    """CLIENT LIST: client name -> the ACL user it is signed in as."""
    return {c["name"]: c["user"] for c in admin(server).client_list() if c.get("name")}


async def test_auth_with_a_password_alone(auth_redis: PrivateRedis) -> None:
    with pytest.raises(redis.AuthenticationError):  # the server does ask for it
        redis.Redis(port=auth_redis.port).ping()
    async with connected(url(auth_redis, password=DEFAULT_PASSWORD)) as pipe:
        assert await pipe.call("ACL", "WHOAMI") == b"default"
        assert await pipe.call("SET", "pipe:password-alone", "signed in") == b"OK"
        assert names_of_users(auth_redis)[CLIENT_NAME] == "default"
    assert admin(auth_redis).get("pipe:password-alone") == b"signed in"


async def test_auth_with_a_user_name_and_an_escaped_password(auth_redis: PrivateRedis) -> None:
    target = url(auth_redis, user=ALICE, password=ALICE_PASSWORD)
    assert quote(ALICE_PASSWORD, safe="") in target
    async with connected(target) as pipe:
        assert await pipe.call("ACL", "WHOAMI") == ALICE.encode()
        # The handshake's CLIENT SETNAME ran signed in, on the same connection.
        assert names_of_users(auth_redis)[CLIENT_NAME] == ALICE


@pytest.mark.parametrize("user", ["", ALICE])
async def test_a_wrong_password_is_refused_with_a_clear_error(
    auth_redis: PrivateRedis, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a hang, not a retry loop, not a generic 'unreachable': the error says AUTH was
    refused, and never carries the password."""
    wrong = "wrong-secret-1234"
    target = url(auth_redis, user=user, password=wrong)
    async with connected(target) as pipe:
        for _ in range(2):  # and again on the next call: nothing half-open is kept
            with pytest.raises(RedisRefused, match="AUTH") as refused:
                await pipe.call("PING")
            assert wrong not in str(refused.value)
    async with limiter_for(target) as limiter:
        limits = Limits(uuid.uuid4(), uuid.uuid4(), 5, None)
        with (
            caplog.at_level(logging.WARNING, logger="service.quotas.limiter"),
            pytest.raises(UpstreamUnavailable),
        ):
            await limiter.check(limits)
    [record] = [r for r in caplog.records if r.getMessage() == "rate limit store unreachable"]
    assert record.__dict__["error"] == "RedisRefused"
    assert "AUTH" in record.__dict__["reason"] and wrong not in record.__dict__["reason"]


async def test_the_urls_database_is_selected(auth_redis: PrivateRedis) -> None:
    """redis://…/5: the pipe's keys, and the limiter's logs, are in database 5 only."""
    target = url(auth_redis, user=ALICE, password=ALICE_PASSWORD, db=5)
    key = f"pipe:db:{uuid.uuid4().hex}"
    async with connected(target) as pipe:
        assert await pipe.call("SET", key, "in five") == b"OK"
    assert admin(auth_redis, db=5).get(key) == b"in five"
    assert admin(auth_redis, db=0).exists(key) == 0
    async with limiter_for(target) as limiter:
        limits = Limits(uuid.uuid4(), uuid.uuid4(), 5, None)
        assert (await limiter.check(limits)).quotas[0].remaining == 4
        log = limiter.log_key("key", limits.key_id)
    assert admin(auth_redis, db=5).llen(log) == 1
    assert admin(auth_redis, db=0).exists(log) == 0


async def test_a_database_the_server_lacks_is_refused(auth_redis: PrivateRedis) -> None:
    async with connected(url(auth_redis, password=DEFAULT_PASSWORD, db=99)) as pipe:
        with pytest.raises(RedisRefused, match="DB index is out of range"):
            await pipe.call("PING")


async def test_tls_with_the_urls_ca(tls: PrivateRedis) -> None:
    """rediss:// with ssl_ca_certs and ssl_cert_reqs as redis-py reads them from the URL;
    the server has no plain port."""
    ca = tls.ping["ssl_ca_certs"]
    target = url(tls, scheme="rediss", db=3, ssl_ca_certs=ca, ssl_cert_reqs="required")
    key = f"pipe:tls:{uuid.uuid4().hex}"
    async with connected(target) as pipe:
        assert await pipe.call("SET", key, "over tls") == b"OK"
        assert [c["name"] for c in admin(tls).client_list()].count(CLIENT_NAME) == 1
    assert admin(tls, db=3).get(key) == b"over tls"
    async with limiter_for(target) as limiter:
        assert (await limiter.check(Limits(uuid.uuid4(), uuid.uuid4(), 2, 3))).quotas[1].limit == 3
    with pytest.raises(redis.ConnectionError):  # plain text to the TLS port is not answered
        redis.Redis(port=tls.port, socket_timeout=1).ping()


async def test_tls_checks_the_servers_certificate(tls: PrivateRedis, tmp_path: Path) -> None:
    stranger = make_ca(tmp_path, "another-ca")
    distrusting = url(tls, scheme="rediss", ssl_ca_certs=stranger, ssl_cert_reqs="required")
    async with connected(distrusting) as pipe:
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            await pipe.call("PING")
    # Told not to check (ssl_cert_reqs=none), the same CA is no obstacle.
    unchecked = url(tls, scheme="rediss", ssl_ca_certs=stranger, ssl_cert_reqs="none")
    async with connected(unchecked) as pipe:
        assert await pipe.call("PING") == b"PONG"


async def test_tls_with_a_client_certificate(mutual_tls: PrivateRedis) -> None:
    files = mutual_tls.ping
    ca = files["ssl_ca_certs"]
    pair = {"ssl_certfile": files["ssl_certfile"], "ssl_keyfile": files["ssl_keyfile"]}
    certified = url(mutual_tls, scheme="rediss", ssl_ca_certs=ca, **pair)
    async with connected(certified) as pipe:
        assert await pipe.call("PING") == b"PONG"
    async with connected(url(mutual_tls, scheme="rediss", ssl_ca_certs=ca)) as pipe:
        with pytest.raises(OSError):  # the server hangs up on a client without one
            await pipe.call("PING")


@pytest.fixture
def plain_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_concurrent_checks_each_count_once(plain_redis: PrivateRedis) -> None:
    async with limiter_for(url(plain_redis)) as limiter:
        limits = Limits(uuid.uuid4(), uuid.uuid4(), 100, 40)
        decisions = await asyncio.gather(*(limiter.check(limits) for _ in range(32)))
    assert sorted(d.quotas[1].remaining for d in decisions) == list(range(8, 40))


async def test_a_lost_script_and_a_killed_connection_cost_no_check(
    plain_redis: PrivateRedis,
) -> None:
    """SCRIPT FLUSH (a restart) while several checks share a batch, then CLIENT KILL of
    the limiter's connection: every check is answered, and counted once."""
    async with limiter_for(url(plain_redis), on_error="deny") as limiter:
        limits = Limits(uuid.uuid4(), uuid.uuid4(), 10, None)
        assert (await limiter.check(limits)).quotas[0].remaining == 9
        admin(plain_redis).script_flush()
        flushed = await asyncio.gather(*(limiter.check(limits) for _ in range(4)))
        assert sorted(d.quotas[0].remaining for d in flushed) == [5, 6, 7, 8]
        killed = admin(plain_redis).client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        after = [(await limiter.check(limits)).quotas[0].remaining for _ in range(2)]
        assert after == [4, 3]


async def test_a_server_that_stops_answering_fails_the_check_within_its_bound(
    plain_redis: PrivateRedis,
) -> None:
    """A stopped redis-server keeps its socket open and answers nothing: the check gives up
    (the policy decides) instead of holding the submission; once it runs again, checks are
    answered again."""
    async with limiter_for(url(plain_redis), stall_seconds=0.2) as limiter:
        limits = Limits(uuid.uuid4(), uuid.uuid4(), 5, None)
        assert (await limiter.check(limits)).quotas[0].remaining == 4
        assert plain_redis.proc is not None
        plain_redis.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(UpstreamUnavailable):
                await asyncio.wait_for(limiter.check(limits), timeout=10)
        finally:
            plain_redis.proc.send_signal(signal.SIGCONT)
        # The stalled check may have been counted (a limit may refuse early, never late).
        assert (await limiter.check(limits)).quotas[0].remaining in (2, 3)
