"""Carrying out webhook events: one attempt per job, then the next one scheduled.

At-least-once: an event is marked delivered only after the receiver's 2xx, so a worker
that dies mid-attempt leaves it leased; when the lease runs out the sweeper hands it to
another worker, which sends it again with the same webhook-id (receivers de-duplicate on
it). Only 2xx within the timeout counts; redirects are not followed; 410 Gone stops the
callback; 429/503 Retry-After is honoured up to a cap.

Each failed attempt gets a generic class (ERROR_CLASSES), all the team's delivery log
shows of it: what its own receiver could have told it, never an address the gateway
resolved or a library's error text. The detail is for operators (the admin API, logs).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

from service.config import Settings
from service.platform.egress import BlockedDestination, DestinationPolicy, IPAddress, UnresolvedHost
from service.platform.http_client import aiohttp_client
from service.platform.metrics import (
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DEFERRED,
    WEBHOOK_DELIVERY_ATTEMPTS,
    WEBHOOK_DELIVERY_DELAY,
    WEBHOOK_LATENCY,
)
from service.webhooks import repository
from service.webhooks.signing import signature_header
from service.webhooks.slots import DestinationSlots, WaitingRoom

logger = logging.getLogger(__name__)

EXCERPT_BYTES = 512
USER_AGENT = "QingboGateway-Webhooks/1"
# How long an attempt over a concurrency cap waits in the process before its event is put
# off (by as long again, on average): see service/webhooks/slots.py.
SLOT_WAIT_SECONDS = 1.0
# First attempts waiting in the process for a turn (jobs.first_attempt) before more go to
# the arq queue: a burst of this many costs a few MB, not a job each.
FIRST_ATTEMPTS_QUEUED = 1000


# What a team may read of a failed attempt (delivery log `error`).
TIMEOUT, CONNECTION_REFUSED = "timeout", "connection_refused"
CONNECTION_FAILED = "connection_failed"
DNS_FAILURE, TLS_ERROR, BLOCKED = "dns_failure", "tls_error", "blocked_destination"
HTTP_ERROR, PROTOCOL_ERROR, INTERRUPTED = "http_error", "protocol_error", "interrupted"
ERROR_CLASSES = (
    TIMEOUT,
    CONNECTION_REFUSED,
    CONNECTION_FAILED,
    DNS_FAILURE,
    TLS_ERROR,
    BLOCKED,
    HTTP_ERROR,
    PROTOCOL_ERROR,
    INTERRUPTED,
)


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    excerpt: str | None
    error: str | None  # the detail, for operators
    retry_after: float | None
    error_class: str | None = None  # for the team
    headers: dict[str, str] | None = None

    @property
    def blocked(self) -> bool:
        return self.error_class == BLOCKED


def failure(error_class: str, detail: str) -> AttemptResult:
    return AttemptResult(None, None, detail[:300], None, error_class=error_class)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (the transport maps aiohttp's errors to httpx's)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 10:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__, getattr(current, "os_error", None)]
    return seen


def classify(exc: httpx.HTTPError) -> str:
    causes = _causes(exc)
    if any(isinstance(c, ssl.SSLError | ssl.CertificateError) for c in causes):
        return TLS_ERROR
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return CONNECTION_REFUSED
    if isinstance(exc, httpx.TimeoutException) and any(isinstance(c, TimeoutError) for c in causes):
        return TIMEOUT
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout):
        return TIMEOUT
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return CONNECTION_FAILED
    return PROTOCOL_ERROR


# Answer headers not kept in the delivery log: they can carry credentials.
_PRIVATE_HEADERS = frozenset(
    {"set-cookie", "set-cookie2", "authorization", "proxy-authorization", "cookie"}
)
_MAX_HEADERS, _MAX_HEADER_VALUE = 30, 200


def loggable_headers(headers: httpx.Headers) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in _PRIVATE_HEADERS or len(kept) >= _MAX_HEADERS:
            continue
        kept[name.lower()] = value[:_MAX_HEADER_VALUE]
    return kept


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from `Retry-After` in either form (delta-seconds or an HTTP date); None for
    anything else. Never raises: a receiver's header cannot crash delivery."""
    if not value:
        return None
    text = value.strip()
    try:
        if text.isascii() and text.isdigit():
            return float(text)
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000" or no zone: RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def destination_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"


class WebhookSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = DestinationPolicy.from_settings(
            settings.webhook_allow_networks,
            settings.webhook_deny_networks,
            settings.webhook_allow_hosts,
        )
        # Built once per process at start: say where webhooks and archive downloads may go.
        logger.info(
            "destinations: public addresses, and %s (teams add their open_destinations)",
            self.policy.describe(),
        )
        per_destination = settings.webhook_max_concurrency_per_destination
        self.slots = DestinationSlots(
            total=settings.webhook_max_concurrent_attempts,
            per_destination=per_destination,
            per_team=settings.webhook_attempts_per_team,
            max_waiting=4 * per_destination,
            wait_seconds=SLOT_WAIT_SECONDS,
        )
        self.first_attempts = WaitingRoom(
            running=settings.webhook_max_concurrent_attempts,
            per_team=settings.webhook_attempts_per_team,
            queued=FIRST_ATTEMPTS_QUEUED,
        )
        self._http = aiohttp_client(timeout=httpx.Timeout(settings.webhook_timeout_seconds))

    @property
    def lease_seconds(self) -> float:
        # Longer than any attempt can take, with its wait for a slot, so no live attempt is
        # ever handed to another.
        longest = SLOT_WAIT_SECONDS + self.settings.webhook_timeout_seconds
        return max(self.settings.webhook_lease_seconds, longest + 5)

    async def aclose(self) -> None:
        await self._http.aclose()

    def next_delay(self, attempts_made: int, retry_after: float | None) -> float | None:
        """Seconds until the next attempt, or None when the schedule is used up."""
        delays = self.settings.webhook_retry_delays
        if attempts_made > len(delays):
            return None
        jitter = self.settings.webhook_retry_jitter
        delay = delays[attempts_made - 1] * random.uniform(1 - jitter, 1 + jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.webhook_max_retry_after_seconds))
        return delay

    async def post(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        policy: DestinationPolicy | None = None,
    ) -> AttemptResult:
        """One attempt, bounded as a whole by QGW_WEBHOOK_TIMEOUT_SECONDS: resolving,
        connecting, sending and reading the answer (a receiver that drips its answer a
        byte at a time fails at that deadline, not at each read's). `policy`: the
        company's plus the team's openings (else the company's)."""
        timeout = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self._post(url, headers, body, policy or self.policy)
        except TimeoutError:
            return failure(TIMEOUT, f"timed out after {timeout:g} s")

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes, policy: DestinationPolicy
    ) -> AttemptResult:
        try:
            scheme, host, port = policy.check_url(url)
            addresses = await policy.resolve(host, port)
        except BlockedDestination as exc:
            return failure(BLOCKED, f"blocked: {exc}")
        except UnresolvedHost as exc:
            return failure(DNS_FAILURE, f"DNS: {exc}")
        last = failure(CONNECTION_FAILED, "no address")
        for address in addresses:  # the next address when one cannot be reached
            try:
                return await self._post_to(address, scheme, port, url, headers, body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                detail = f"{type(exc).__name__} to {len(addresses)} address(es): {exc}"
                last = failure(classify(exc), detail)
            except httpx.HTTPError as exc:
                return failure(classify(exc), f"{type(exc).__name__}: {exc}")
        return last

    async def _post_to(
        self,
        address: IPAddress,
        scheme: str,
        port: int,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> AttemptResult:
        parts = urlsplit(url)
        host = parts.hostname or ""
        dial = f"[{address}]" if address.version == 6 else str(address)
        target = urlunsplit((scheme, f"{dial}:{port}", parts.path or "/", parts.query, ""))
        request_headers = {**headers, "Host": parts.netloc.rpartition("@")[2]}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        auth = (parts.username or "", parts.password or "") if parts.username else None
        async with self._http.stream(
            "POST",
            target,
            content=body,
            headers=request_headers,
            extensions=extensions,
            auth=auth,
        ) as response:
            excerpt = b""
            async for chunk in response.aiter_bytes():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
            retry_after = None
            if response.status_code in (429, 503):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return AttemptResult(
                response.status_code,
                excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"),
                None,
                retry_after,
                headers=loggable_headers(response.headers),
            )

    async def deliver(self, pool: asyncpg.Pool, event_id: str) -> tuple[str, float | None, int]:
        """One attempt at the event: its result, for a retry the delay until the next, and
        how many attempts the event has had. Two statements in the usual case: the claim
        with the attempt's start, and its record."""
        sent_at = datetime.now(UTC)
        async with pool.acquire() as conn:
            event = await repository.claim_and_start(
                conn, event_id, lease_seconds=self.lease_seconds, started_at=sent_at
            )
            if event is None:
                stopped = await repository.stop_if_receiver_gone(conn, event_id)
                return ("stopped" if stopped else "skipped"), None, 0
        destination, team = destination_of(event["url"]), str(event["team_id"])
        if not self.slots.take(destination, team):
            # The destination or the team is at its cap: wait for a slot (the lease holds
            # the event).
            if not await self.slots.wait(destination, team):
                delay = random.uniform(0.5, 1.5) * SLOT_WAIT_SECONDS
                async with pool.acquire() as conn:
                    await repository.defer(
                        conn, event_id, attempt_id=event["attempt_id"], delay_seconds=delay
                    )
                WEBHOOK_DEFERRED.inc()
                return "deferred", delay, event["attempts"] - 1
            sent_at = datetime.now(UTC)
            try:
                async with pool.acquire() as conn:
                    await repository.restart_attempt(conn, event["attempt_id"], sent_at)
            except BaseException:
                self.slots.give_back(destination, team)
                raise
        started = time.perf_counter()
        policy = self.policy.for_team(event["open_destinations"])
        try:
            result = await self.post(
                event["url"], self._headers(event, sent_at), event_body(event), policy
            )
        except asyncio.CancelledError:
            # The job was cancelled (worker stopping): log it and retry on schedule. If even
            # that cannot finish, the next claim marks the attempt interrupted.
            cancelled = failure(INTERRUPTED, "cancelled: the worker stopped")
            await asyncio.shield(self._record(pool, event, sent_at, cancelled, 0.0))
            raise
        finally:
            # The slot is the receiver's: it is free once the answer is in, before our own
            # bookkeeping.
            self.slots.give_back(destination, team)
        return await self._record(pool, event, sent_at, result, time.perf_counter() - started)

    def _headers(self, event: Any, sent_at: datetime) -> dict[str, str]:
        secrets = [event["webhook_secret"]]
        expires = event["previous_secret_expires_at"]
        if event["previous_webhook_secret"] and expires is not None and expires > sent_at:
            secrets.append(event["previous_webhook_secret"])
        return {
            "webhook-id": event["id"],
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature_header(
                secrets, event["id"], sent_at, event_body(event).decode("utf-8")
            ),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }

    async def _record(
        self,
        pool: asyncpg.Pool,
        event: Any,
        sent_at: datetime,
        result: AttemptResult,
        latency: float,
    ) -> tuple[str, float | None, int]:
        event_id, attempt = event["id"], event["attempts"]
        ok = result.status_code is not None and 200 <= result.status_code < 300
        delay = None
        if ok:
            status, outcome = "delivered", "delivered"
        elif result.status_code == 410:
            status, outcome = "stopped", "stopped"
        elif result.blocked:
            status, outcome = "failed", "blocked"
        else:
            delay = self.next_delay(attempt, result.retry_after)
            status, outcome = ("pending", "retry") if delay is not None else ("failed", "failed")
        error, error_class = result.error, result.error_class
        if error is None and not ok:
            error, error_class = f"HTTP {result.status_code}", HTTP_ERROR
        stop_others = status == "stopped" and event["task_id"] is not None
        # One statement records the attempt; a 410 also stops the callback's other events,
        # in the same transaction.
        async with pool.acquire() as conn, conn.transaction() if stop_others else nullcontext():
            await repository.record_attempt(
                conn,
                attempt_id=event["attempt_id"],
                event_id=event_id,
                latency_ms=round(latency * 1000),
                status_code=result.status_code,
                response_excerpt=result.excerpt,
                response_headers=result.headers,
                error=error,
                error_class=error_class,
                status=status,
                next_attempt_at=sent_at + timedelta(seconds=delay) if delay is not None else None,
            )
            if stop_others:
                await repository.stop_other_events(conn, task_id=event["task_id"], url=event["url"])
        WEBHOOK_ATTEMPTS.labels(_event_label(event["event"]), outcome).inc()
        if result.status_code is not None:
            WEBHOOK_LATENCY.observe(latency)
        if status != "pending":
            WEBHOOK_DELIVERY_ATTEMPTS.observe(attempt)
        if ok:
            delay_seconds = (datetime.now(UTC) - event["created_at"]).total_seconds()
            WEBHOOK_DELIVERY_DELAY.observe(delay_seconds)
        logger.info(
            "webhook attempt",
            extra={
                "task_id": event["task_id"],
                "webhook_id": event_id,
                "attempt": attempt,
                "outcome": outcome,
                "status_code": result.status_code,
                "latency_ms": round(latency * 1000),
                # For operators: the detail names no secret (URLs are not in it; the
                # destination is scheme, host and port).
                "error_class": error_class,
                "error": error,
                "destination": destination_of(event["url"]),
            },
        )
        return outcome, delay, attempt


def event_body(event: Any) -> bytes:
    return orjson.dumps(event["payload"])


def _event_label(event: str) -> str:
    return event if event in _EVENT_LABELS else "other"


_EVENT_LABELS = {"queued", "processing", "completed", "failed", "cancelled", "budget.threshold"}
