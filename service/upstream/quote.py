"""Qingbo's public quote, `POST /waveapi/quote` (no key): the price of a task body as the
vendor reads it, its input media measured (qingbo-catalog.md).

Every call is bounded: one deadline for the whole exchange (connect, send, answer), the
answer read to at most MAX_ANSWER_BYTES, and parsed defensively, since the vendor documents
neither its statuses nor its `code` values. The API key is never sent: the endpoint is
public, and a key has no business leaving for a URL an operator may point elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

import httpx

from service.platform.money import MICROS_PER_USD
from service.upstream.sanitize import MAX_MESSAGE_CHARS, clean_text

QUOTE_PATH = "/waveapi/quote"
# A quote is a few hundred bytes; anything much larger is not one.
MAX_ANSWER_BYTES = 64 * 1024
# A price is a short decimal; a longer text is not one (and Decimal's work stays small).
MAX_AMOUNT_CHARS = 32
# Qingbo's error keys are snake_case words (`input_video_duration_unknown`, `asset_*`).
ERROR_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Quoted:
    """The vendor's price for the body, in micro-dollars (rounded up, never understated)."""

    micros: int


@dataclass(frozen=True)
class QuoteRefusal:
    """The vendor refused to price the body: its error key, message and named field, if any
    (all cleaned; `param` only when it looks like a field name)."""

    key: str
    message: str
    param: str | None


@dataclass(frozen=True)
class NoQuote:
    """No usable answer: `outcome` says why in a bounded word (a metric label)."""

    outcome: str
    detail: str


QuoteAnswer = Quoted | QuoteRefusal | NoQuote


def quote_url(base_url: str, configured: str | None) -> str:
    """The configured quote endpoint, else the upstream's own (as `catalog verify-prices`)."""
    return configured or base_url.rstrip("/") + QUOTE_PATH


class QuoteClient:
    """The process's client of the quote endpoint: one per process, built and closed with
    the other shared clients (tasks/resources.py). The endpoint is given per call, from
    the settings in force (QGW_QUOTE_URL, else the upstream's own)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ask(self, url: str, body: bytes, *, timeout: float) -> QuoteAnswer:
        """The vendor's answer at `url` for `body` (a task body, JSON), within `timeout`
        seconds."""
        try:
            async with asyncio.timeout(timeout):
                status, raw = await self._exchange(url, body, timeout)
        except (TimeoutError, httpx.TimeoutException):
            return NoQuote("timeout", f"no answer within {timeout:g} s")
        except _TooLarge:
            return NoQuote("bad_answer", f"answer over {MAX_ANSWER_BYTES} bytes")
        except httpx.HTTPError as exc:
            return NoQuote("unreachable", type(exc).__name__)
        return read_answer(status, raw)

    async def _exchange(self, url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        async with self._http.stream(
            "POST",
            url,
            content=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
        ) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise _TooLarge
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)


def build_quote_client() -> QuoteClient:
    """A client for the admissions of this process (redirects not followed: the answer
    must come from the endpoint configured)."""
    return QuoteClient(
        httpx.AsyncClient(
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            follow_redirects=False,
        )
    )


class _TooLarge(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_answer(status: int, raw: bytes) -> QuoteAnswer:
    """The quote in an answer: `{code, message, data: {total_usd, ...}}` on success, a
    refusal carrying `errorKey` and `message` (whatever its status, short of a 5xx or a
    429, which only say "not now"); anything else is no quote."""
    if status >= 500 or status == 429:
        return NoQuote("http_error", f"HTTP {status}")
    try:
        # parse_float: amounts are read as Decimal, never through a float.
        answer = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return NoQuote("bad_answer", f"HTTP {status}, not JSON")
    if not isinstance(answer, dict):
        return NoQuote("bad_answer", f"HTTP {status}, not a JSON object")
    data = answer.get("data")
    micros = _micros(data.get("total_usd") if isinstance(data, dict) else None)
    key = answer.get("errorKey")
    if isinstance(key, str) and ERROR_KEY.fullmatch(key) and (status >= 400 or micros is None):
        return _refusal(key, answer)
    if not 200 <= status < 300:
        return NoQuote("http_error", f"HTTP {status}")
    if key is not None or answer.get("code") not in (0, 200, None):
        return NoQuote("bad_answer", "a success status without a success code")
    if micros is None:
        return NoQuote("bad_answer", "no positive data.total_usd")
    return Quoted(micros)


def _refusal(key: str, answer: dict[str, Any]) -> QuoteRefusal:
    message = answer.get("message")
    param = answer.get("param")
    return QuoteRefusal(
        key=key,
        message=clean_text(message, limit=MAX_MESSAGE_CHARS) if isinstance(message, str) else "",
        param=param if isinstance(param, str) and FIELD_NAME.fullmatch(param) else None,
    )


def _micros(total: Any) -> int | None:
    """A positive USD amount (decimal string or JSON number) as micro-dollars, rounded up."""
    if isinstance(total, bool) or not isinstance(total, str | int | Decimal):
        return None
    text = str(total).strip()
    if len(text) > MAX_AMOUNT_CHARS:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0:
        return None
    return int((value * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))
