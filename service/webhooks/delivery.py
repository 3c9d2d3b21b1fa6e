"""Carrying out webhook events: one attempt per job, then the next one scheduled.

At-least-once: an event is marked delivered only after the receiver's 2xx, so a worker
that dies mid-attempt leaves it leased; when the lease runs out the sweeper hands it to
another worker, which sends it again with the same webhook-id (receivers de-duplicate on
it). Only 2xx within the timeout counts; redirects are not followed; 410 Gone stops the
callback; 429/503 Retry-After is honoured up to a cap.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

from service.config import Settings
from service.metrics import (
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERY_ATTEMPTS,
    WEBHOOK_DELIVERY_DELAY,
    WEBHOOK_LATENCY,
)
from service.webhooks import repository
from service.webhooks.signing import signature_header
from service.webhooks.ssrf import BlockedDestination, DestinationPolicy

logger = logging.getLogger(__name__)

EXCERPT_BYTES = 512
USER_AGENT = "QingboGateway-Webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    excerpt: str | None
    error: str | None
    retry_after: float | None
    blocked: bool = False


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class WebhookSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = DestinationPolicy.from_settings(
            settings.webhook_allow_networks, settings.webhook_deny_networks
        )
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            trust_env=False,
        )

    @property
    def lease_seconds(self) -> float:
        # Longer than any attempt can take, so no live attempt is ever handed to another.
        return max(self.settings.webhook_lease_seconds, self.settings.webhook_timeout_seconds + 5)

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

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        """One POST to the checked address the URL's host resolves to."""
        try:
            scheme, host, port = self.policy.check_url(url)
            address = await self.policy.resolve(host, port)
        except BlockedDestination as exc:
            return AttemptResult(None, None, f"blocked: {exc}", None, blocked=True)
        parts = urlsplit(url)
        dial = f"[{address}]" if address.version == 6 else str(address)
        target = urlunsplit((scheme, f"{dial}:{port}", parts.path or "/", parts.query, ""))
        request_headers = {**headers, "Host": parts.netloc.rpartition("@")[2]}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        auth = (parts.username or "", parts.password or "") if parts.username else None
        try:
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
                )
        except httpx.TimeoutException:
            return AttemptResult(None, None, "timed out", None)
        except httpx.HTTPError as exc:
            return AttemptResult(None, None, f"{type(exc).__name__}: {exc}"[:300], None)

    async def deliver(self, pool: asyncpg.Pool, event_id: str) -> tuple[str, float | None, int]:
        """One attempt at the event: its result, for a retry the delay until the next, and
        how many attempts the event has had."""
        async with pool.acquire() as conn:
            event = await repository.claim(conn, event_id, lease_seconds=self.lease_seconds)
        if event is None:
            return "skipped", None, 0
        body = orjson.dumps(event["payload"])
        sent_at = datetime.now(UTC)
        secrets = [event["webhook_secret"]]
        expires = event["previous_secret_expires_at"]
        if event["previous_webhook_secret"] and expires is not None and expires > sent_at:
            secrets.append(event["previous_webhook_secret"])
        headers = {
            "webhook-id": event["id"],
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature_header(
                secrets, event["id"], sent_at, body.decode("utf-8")
            ),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        started = time.perf_counter()
        result = await self.post(event["url"], headers, body)
        latency = time.perf_counter() - started
        attempt = event["attempts"]
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
        error = result.error
        if error is None and not ok:
            error = f"HTTP {result.status_code}"
        async with pool.acquire() as conn, conn.transaction():
            await repository.record_attempt(
                conn,
                event_id=event_id,
                attempt=attempt,
                started_at=sent_at,
                latency_ms=round(latency * 1000),
                status_code=result.status_code,
                response_excerpt=result.excerpt,
                error=error,
                status=status,
                next_attempt_at=sent_at + timedelta(seconds=delay) if delay is not None else None,
            )
            if status == "stopped" and event["task_id"] is not None:
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
            },
        )
        return outcome, delay, attempt


def _event_label(event: str) -> str:
    return event if event in _EVENT_LABELS else "other"


_EVENT_LABELS = {"queued", "processing", "completed", "failed", "cancelled", "budget.threshold"}
