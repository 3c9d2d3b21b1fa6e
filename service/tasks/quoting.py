"""Quote before admission: a task whose reservation is a bound resting on input media the
vendor measures (a reference video's seconds, an output as long as its source) asks the
vendor's public quote (`POST /waveapi/quote`), which reads the media, and reserves that
amount instead of the most the rules allow, so a team's budget is not tied up by what the
task will not cost, nor a task refused that would fit.

Invariants:
- the reservation is never above the catalog's bound (a higher or odd quote keeps it);
- any failure (timeout, unreachable, odd answer, a refusal that is not a permanent code)
  keeps the bound: the quote can only lower a reservation, never stop an admission;
- a refusal with one of Qingbo's permanent codes (the ones that fail a submitted task at
  once, upstream/client.py) refuses the task before anything is stored or reserved, with
  that code, naming the field, as the task would otherwise fail after admission;
- settlement is unchanged: the team is charged Qingbo's `cost`, at most the (quoted)
  reservation times QGW_CHARGE_CAP_FACTOR, the rest a dispute (tasks/settlement.py);
- the quote is asked last, after the catalog's price (which can refuse), the
  Idempotency-Key's replay and the rate limits (tasks/service.py), so a replayed or
  rate-limited request never waits on it, and with no pooled connection held meanwhile.

Only the `2026-09` generation prices by the catalog; `2026-04` reservations are exact
(April's per-second table) and never quoted.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import orjson

from service.catalog.engine import Catalog, ModelEntry
from service.catalog.rules import NormalizedTask
from service.platform.errors import InvalidRequest
from service.platform.metrics import ADMISSION_QUOTES
from service.platform.money import format_usd
from service.tasks.resources import Resources
from service.upstream.client import permanent
from service.upstream.quote import NoQuote, Quoted, QuoteRefusal, quote_url

logger = logging.getLogger(__name__)


class QuoteRefused(InvalidRequest):
    """Qingbo's quote refused the task with a permanent code (400, that code)."""


@lru_cache(maxsize=64)
def _refusal_class(code: str) -> type[QuoteRefused]:
    """A QuoteRefused whose `code` is the vendor's, so every reader of the error (envelope,
    console, logs) sees the code the task would have failed with."""
    return type("QuoteRefused", (QuoteRefused,), {"code": code})


def asks_quote(res: Resources, task: NormalizedTask, catalog: Catalog) -> bool:
    """Whether the task's reservation may be the vendor's quote: quoting is on (its client
    built: tasks/resources.py), the generation prices by the catalog, and the model's
    price for this body is a bound resting on input media."""
    settings = res.settings
    if res.quotes is None or settings.quote_before_admission == "off":
        return False
    if settings.generation.prices_from != "catalog":
        return False
    entry = catalog.models.get(task.model_id)
    return entry is not None and entry.pricing.depends_on_media(task.pricing_body)


async def reservation_of(
    res: Resources, task: NormalizedTask, catalog: Catalog, *, bound: int
) -> int:
    """The reservation of a task `asks_quote` accepted, in micro-dollars: the vendor's
    quote where it answers, never above `bound` (the catalog's price, `price_of`);
    otherwise `bound`. Raises QuoteRefused for a refusal with a permanent code."""
    settings = res.settings
    quotes = res.quotes
    assert quotes is not None  # asks_quote
    entry = catalog.models[task.model_id]
    if task.ref_task_id is not None:
        return _kept(task, bound, "chained", "a chained action is priced on its source")
    body = orjson.dumps(task.upstream)
    if len(body) > settings.max_request_bytes:
        return _kept(task, bound, "too_large", f"{len(body)} bytes")
    url = quote_url(settings.qingbo_base_url, settings.quote_url)
    answer = await quotes.ask(url, body, timeout=settings.quote_timeout_seconds)
    if isinstance(answer, NoQuote):
        return _kept(task, bound, answer.outcome, answer.detail)
    if isinstance(answer, QuoteRefusal):
        if not permanent(answer.key):
            return _kept(task, bound, "declined", answer.key)
        ADMISSION_QUOTES.labels("refused").inc()
        # The vendor's message may quote the media URLs (signed links): not logged.
        logger.info("quote refused the task", extra={"model": task.model_id, "code": answer.key})
        param = _refused_field(answer, task, entry)
        raise _refusal_class(answer.key)(
            f"{param}: Qingbo's quote refused the task ({answer.key})"
            + (f": {answer.message}" if answer.message else ""),
            param=param,
        )
    assert isinstance(answer, Quoted)
    if answer.micros > bound:
        return _kept(task, bound, "above_bound", f"quoted {format_usd(answer.micros)} USD")
    ADMISSION_QUOTES.labels("quoted").inc()
    logger.debug(
        "reserved the quote",
        extra={
            "model": task.model_id,
            "bound_usd": format_usd(bound),
            "quoted_usd": format_usd(answer.micros),
        },
    )
    return answer.micros


def _kept(task: NormalizedTask, bound: int, outcome: str, detail: str) -> int:
    ADMISSION_QUOTES.labels(outcome).inc()
    logger.info(
        "quote not used: reserving the bound",
        extra={
            "model": task.model_id,
            "outcome": outcome,
            "detail": detail,
            "bound_usd": format_usd(bound),
        },
    )
    return bound


def _refused_field(answer: QuoteRefusal, task: NormalizedTask, entry: ModelEntry) -> str:
    """The field the refusal is about: the vendor's `param`, or the field its message
    starts with ("video_urls: ..."), when the body has it; else by the code (a video field
    for an unreadable length, a media field for an asset); else the model."""
    body = task.upstream
    named = answer.param or answer.message.split(":", 1)[0].strip()
    if named in body:
        return named
    if answer.key == "input_video_duration_unknown":
        candidates = entry.media.videos
    elif answer.key.startswith("asset_"):
        candidates = entry.media.fields
    else:
        candidates = ()
    return next((f for f in candidates if body.get(f)), "model")
