"""One pipelined Redis connection per API process, for the rate-limit checks.

Why hand-made: redis-py's asyncio client takes a pooled connection, wraps the command in
its retry machinery, checks the socket and parses through its own layers for every
command. Here every check of one event-loop turn is written at once on one connection and
the answers are matched in order (RESP answers in order), parsed by hiredis (the parser
redis-py itself uses): less client CPU per check than redis-py's client and than
valkey-glide (the well-kept multiplexing client), and less CPU per guarded submission
than redis-py (bench/quotas.py, bench/cpu.py; their figures are in bench/RESULTS.md).
Glide, tried in the API, was no faster than redis-py there. redis-py's own
non-transactional pipeline, fed the same way, cost more client CPU per check and gave
fewer checks per second; it stays in the benchmark as the comparator
(`bench/redis_py_pipeline.py`, `bench/quotas.py --mode pipelines`), and
docs/decisions/004-pipelined-redis.md says when the question is open again.

The connection is opened on first use and again after it is lost. A connection that does
not answer for `stall_seconds` is given up: every request waiting on it fails, and the
next request opens a new one. Opening (connect, TLS, AUTH, SELECT, CLIENT SETNAME) is
bounded by the same time; a handshake Redis refuses is RedisRefused, naming the step.
What to connect to comes from the redis-py client given (its URL's host, port or socket,
user name, password, database, and for rediss:// its ssl_* arguments).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import RedisSSLContext, SSLConnection


class RedisReplyError(Exception):
    """Redis answered with an error (the message is Redis's)."""


class RedisRefused(RedisReplyError):
    """Redis refused the connection's handshake (AUTH, SELECT, CLIENT SETNAME): a setting
    is wrong, and no retry will mend it. The message names the step and Redis's answer
    (only its error code for AUTH: an answer to AUTH is never echoed, whatever the server)."""


class RedisLost(ConnectionError):
    """The connection closed, or stalled, before the answer came."""


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings. The same bytes as redis-py's
    PythonRespSerializer, which was tried here and cost more client CPU per check
    (bench/quotas.py)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiting.popleft()
                if not waiter.done():  # one given up on (a stall) stays in line
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # not RESP, or an answer nobody asked
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisLost("Redis closed the connection"))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost or self._transport is None:
            raise RedisLost("Redis connection closed")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        # The commands of one turn of the event loop go in one write: a write to a loopback
        # socket also runs the receiving side's network stack, in this process's time.
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(packed)
        return waiter

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and not self.lost:
            self._transport.write(b"".join(unsent))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails whoever still waits


async def _answer(waiter: asyncio.Future[Any], seconds: float, proto: _Protocol) -> Any:
    """The answer, or RedisLost after `seconds` (the connection is given up)."""

    def stalled() -> None:
        if not waiter.done():
            proto.abort()

    # A timer per request, not asyncio.timeout(): a timer handle is far cheaper than the
    # timeout's context manager and its task bookkeeping, on every check.
    timer = asyncio.get_running_loop().call_later(seconds, stalled)
    try:
        reply = await waiter
    finally:
        timer.cancel()
    if isinstance(reply, hiredis.ReplyError):
        raise RedisReplyError(str(reply))
    return reply


def _refusal(step: str, answer: str) -> str:
    said = answer.split(" ", 1)[0] if step == "AUTH" else answer  # AUTH: no echo, ever
    return f"Redis refused {step}: {said}"


class RedisPipe:
    """Commands to the server `redis` (arq's client) talks to, on a connection of their own."""

    def __init__(self, redis: Redis, *, client_name: str, stall_seconds: float) -> None:
        pool = redis.connection_pool
        self._kwargs = dict(pool.connection_kwargs)
        self._ssl = (
            self._ssl_context(self._kwargs)
            if issubclass(pool.connection_class, SSLConnection)
            else None
        )
        self._client_name = client_name
        self.stall_seconds = stall_seconds
        self._proto: _Protocol | None = None
        self._opening: asyncio.Task[_Protocol] | None = None

    @staticmethod
    def _ssl_context(kwargs: dict[str, Any]) -> ssl.SSLContext:
        return RedisSSLContext(
            keyfile=kwargs.get("ssl_keyfile"),
            certfile=kwargs.get("ssl_certfile"),
            cert_reqs=kwargs.get("ssl_cert_reqs", "required"),
            ca_certs=kwargs.get("ssl_ca_certs"),
            ca_data=kwargs.get("ssl_ca_data"),
            check_hostname=kwargs.get("ssl_check_hostname", False),
        ).get()

    async def call(self, *args: Any, seconds: float | None = None) -> Any:
        """Send one command and wait for its answer, at most `seconds` (the stall bound)."""
        proto = self._proto
        if proto is None or proto.lost:
            proto = await self._open()
        bound = self.stall_seconds if seconds is None else seconds
        return await _answer(proto.send(pack(args)), bound, proto)

    async def _open(self) -> _Protocol:
        if self._opening is None:  # concurrent callers share one attempt
            self._opening = asyncio.ensure_future(self._connect())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        kw = self._kwargs
        async with asyncio.timeout(self.stall_seconds):
            if kw.get("path"):
                _, proto = await loop.create_unix_connection(_Protocol, kw["path"])
            else:
                _, proto = await loop.create_connection(
                    _Protocol, kw.get("host", "localhost"), kw.get("port", 6379), ssl=self._ssl
                )
            try:
                handshake: list[tuple[Any, ...]] = []
                if kw.get("password"):
                    user = kw.get("username")
                    handshake.append(
                        ("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"])
                    )
                if kw.get("db"):
                    handshake.append(("SELECT", kw["db"]))
                handshake.append(("CLIENT", "SETNAME", self._client_name))
                waiters = [proto.send(pack(command)) for command in handshake]
                for command, waiter in zip(handshake, waiters, strict=True):
                    if isinstance(reply := await waiter, hiredis.ReplyError):
                        raise RedisRefused(_refusal(command[0], str(reply)))
            except BaseException:
                proto.abort()
                raise
        self._proto = proto
        return proto

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self._proto is not None:
            self._proto.abort()
            self._proto = None
