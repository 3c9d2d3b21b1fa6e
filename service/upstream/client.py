"""The Qingbo HTTP client: one place that knows its endpoints, auth and error codes."""

from __future__ import annotations

import time
from typing import Any

import httpx

from service.platform.http_client import aiohttp_client
from service.platform.metrics import UPSTREAM_CALLS, UPSTREAM_IN_FLIGHT, UPSTREAM_LATENCY
from service.upstream.errors import (
    UpstreamAccountBlocked,
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamRejected,
    UpstreamRetryable,
)

# Error codes that are final whatever the HTTP status says (task-system.mdx; the
# 2026-09-24 pages: a request Qingbo will never take, refused unbilled). The task fails
# at once, without retries, and its reservation is released.
PERMANENT_CODES = frozenset(
    {
        "price_not_configured",
        "input_video_duration_unknown",
        "model_not_found",
        "capability_violation",
        "asset_reference_invalid",
        "asset_reference_unsupported",
        "asset_not_found",
        "asset_type_mismatch",
        "asset_route_mismatch",
    }
)


def permanent(code: str | None) -> bool:
    """A code Qingbo answers only for what it will never take (any `asset_*` included)."""
    return code is not None and (code in PERMANENT_CODES or code.startswith("asset_"))


# Failures that happen before a byte of the request left: safe to repeat.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_of(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
        error = body.get("error") or {}
        return str(error.get("message") or response.reason_phrase), error.get("code")
    except (ValueError, AttributeError):
        return f"Qingbo answered HTTP {response.status_code}", None


def classify(response: httpx.Response) -> UpstreamError | None:
    status = response.status_code
    if status < 400:
        return None
    message, code = _error_of(response)
    if permanent(code):
        # 2026-09 answers an unpriced model with HTTP 500: permanent, never billed.
        return UpstreamRejected(message, status=status, code=code)
    if status in (401, 402):
        return UpstreamAccountBlocked(message, status=status, code=code)
    if status == 429 or status >= 500:
        return UpstreamRetryable(
            message, status=status, code=code, retry_after=_retry_after(response)
        )
    return UpstreamRejected(message, status=status, code=code)


def build_http_client(*, timeout: float, connect_timeout: float) -> httpx.AsyncClient:
    """For what Qingbo may act on (submit, cancel): httpx's own transport, whose errors
    tell "not sent" (safe to send again) from "sent, no answer" (may be paid)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        follow_redirects=False,
    )


def build_read_client(*, timeout: float, connect_timeout: float) -> httpx.AsyncClient:
    """For reads of a task, on aiohttp's pool (service/platform/http_client.py says why). Its errors
    do not tell "not sent" from "no answer", which a read may ignore: it is read again
    either way."""
    return aiohttp_client(timeout=httpx.Timeout(timeout, connect=connect_timeout))


class QingboClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        reads: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http
        self._reads = reads or http
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def create_task(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Submit; with `idempotency_key` (2026-09) a repeat within 24 h is the same task."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call(
            "submit", "POST", "/v1/tasks", body, ambiguous_on_read=True, headers=headers
        )

    async def get_task(self, upstream_task_id: str) -> dict[str, Any]:
        return await self._call(
            "status", "GET", f"/v1/tasks/{upstream_task_id}", client=self._reads
        )

    async def cancel_task(self, upstream_task_id: str) -> dict[str, Any]:
        return await self._call("cancel", "POST", f"/v1/tasks/{upstream_task_id}/cancel")

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        ambiguous_on_read: bool = False,
        headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        outcome = "error"
        in_flight = UPSTREAM_IN_FLIGHT.labels(operation)
        in_flight.inc()
        try:
            try:
                response = await (client or self._http).request(
                    method,
                    self._base_url + path,
                    json=body,
                    headers={**self._headers, **headers} if headers else self._headers,
                )
            except _NOT_SENT as exc:
                outcome = "unreachable"
                raise UpstreamRetryable(f"Qingbo unreachable: {type(exc).__name__}") from None
            except httpx.TransportError as exc:
                outcome = "no_answer"
                text = f"no answer from Qingbo: {type(exc).__name__}"
                if ambiguous_on_read:
                    raise UpstreamAmbiguous(text) from None
                raise UpstreamRetryable(text) from None
            error = classify(response)
            if error is not None:
                outcome = f"http_{response.status_code}"
                if ambiguous_on_read and response.status_code == 504:
                    # A gateway timeout: the backend may well have created the task.
                    raise UpstreamAmbiguous(error.message, status=504, code=error.code)
                raise error
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                outcome = "bad_body"
                text = "Qingbo answered 2xx with a body that is not a JSON object"
                raise (UpstreamAmbiguous if ambiguous_on_read else UpstreamRetryable)(text)
            outcome = "ok"
            return payload
        finally:
            in_flight.dec()
            UPSTREAM_CALLS.labels(operation, outcome).inc()
            UPSTREAM_LATENCY.labels(operation).observe(time.perf_counter() - started)
