"""Requests-per-minute limits per key and per team, exact across API replicas.

A sliding-window log in Redis, checked and recorded by one Lua script (atomic): a request
is admitted only if every applicable limit has had fewer than N admitted requests in the
last 60 s, so "N per minute" holds over *any* 60 s (a burst of N is fine). GCRA would
need less memory but lets N + 1 through in some 60 s windows; N is a per-minute count of
paid submissions, so its log stays small. Time comes from Redis (`TIME`), not from the
replicas' clocks.

The log is a Redis list of admission times, oldest first: one script appends, so it is
already in order, and every step is O(1) (pop what left the window from the head, count,
push on the tail). A sorted set would sort again what arrives sorted (measured: the
script ran slower on one).

Only task submissions (`POST /v1/tasks`, `POST /v1/tasks/sync`) count: reads and polls
are served locally and cost nothing upstream. `check_counter` applies the same log to
other per-minute limits (a team's webhook re-sends).

The checks go over one pipelined connection of the limiter's own (`pipe.py`, which says
why redis-py's client is not used here), the script by EVALSHA; a Redis that lost it
(restart, SCRIPT FLUSH) gets it again by EVAL. `connect` builds that connection: the
hand-made pipe, unless a benchmark hands in another with the same interface
(`bench/quotas.py --mode pipelines` measures redis-py's own pipeline this way).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from service.platform.errors import RateLimited, UpstreamUnavailable
from service.platform.metrics import (
    RATE_LIMIT_CHECKS_IN_PROGRESS,
    RATE_LIMIT_ERRORS,
    TASKS_REJECTED,
)
from service.quotas.limits import Limits
from service.quotas.pipe import RedisPipe, RedisRefused, RedisReplyError

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
CLIENT_NAME = "qgw-rate-limits"  # in Redis's CLIENT LIST
STALL_SECONDS = 2.0  # no answer for this long: Redis is unreachable for this check
# One bound for a whole check, retry and reconnection included.
CHECK_DEADLINE_STALLS = 2.5


class Pipe(Protocol):
    """What the limiter needs of its connection (RedisPipe, or a benchmark's comparator)."""

    stall_seconds: float

    async def call(self, *args: Any, seconds: float | None = None) -> Any: ...

    async def aclose(self) -> None: ...


class Connect(Protocol):
    """Builds the limiter's connection to the server `redis` talks to (RedisPipe does)."""

    def __call__(self, redis: Redis, *, client_name: str, stall_seconds: float) -> Pipe: ...


# KEYS: one list per limit. ARGV: window ms, then one limit per key.
# Answers {admitted (1/0), index of the limit that refused (1-based) or 0, the time it
#          recorded (ms), then per limit: remaining after this request, ms until its
#          oldest entry expires}.
CHECK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local counts, oldest = {}, {}
for i, key in ipairs(KEYS) do
  while true do
    local first = redis.call('LINDEX', key, 0)
    if not first or tonumber(first) > now - window then
      oldest[i] = first and tonumber(first)
      break
    end
    redis.call('LPOP', key)
  end
  counts[i] = redis.call('LLEN', key)
end
local refused = 0
for i, key in ipairs(KEYS) do
  if counts[i] >= tonumber(ARGV[i + 1]) then refused = i break end
end
local out = {refused == 0 and 1 or 0, refused, now}
for i, key in ipairs(KEYS) do
  local used = counts[i]
  if refused == 0 then
    redis.call('RPUSH', key, now)
    redis.call('PEXPIRE', key, window)
    used = used + 1
  end
  local reset = window  -- an empty log's first entry is this one
  if oldest[i] then reset = oldest[i] + window - now end
  table.insert(out, tonumber(ARGV[i + 1]) - used)
  table.insert(out, reset)
end
return out
"""


@dataclass(frozen=True)
class Quota:
    name: str  # "key" or "team"
    limit: int
    remaining: int
    reset_seconds: int


@dataclass
class Decision:
    quotas: list[Quota] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        """IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers): policy and state."""
        if not self.quotas:
            return {}
        tightest = min(self.quotas, key=lambda q: (q.remaining, -q.reset_seconds))
        return {
            "RateLimit-Policy": ", ".join(
                f'"{q.name}";q={q.limit};w={WINDOW_MS // 1000}' for q in self.quotas
            ),
            "RateLimit": f'"{tightest.name}";r={tightest.remaining};t={tightest.reset_seconds}',
        }


class RateLimiter:
    """Admits a submission under its key's and team's per-minute limits, or raises 429."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        on_error: str,
        stall_seconds: float = STALL_SECONDS,
        connect: Connect = RedisPipe,
    ) -> None:
        # The server arq's client (`redis`) talks to, on a connection of the limiter's own:
        # its checks never queue behind arq's commands.
        self._pipe = connect(redis, client_name=CLIENT_NAME, stall_seconds=stall_seconds)
        # EVALSHA names the script by this digest.
        self._sha = hashlib.sha1(CHECK_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._deadline = CHECK_DEADLINE_STALLS * stall_seconds
        self.prefix = prefix
        self._on_error = on_error

    async def aclose(self) -> None:
        await self._pipe.aclose()

    def log_key(self, scope: str, subject: object) -> str:
        """The Redis list holding one limit's admissions ("key" or "team", and its id)."""
        return f"{self.prefix}:{scope}:{subject}"

    def _entries(self, limits: Limits) -> list[tuple[str, str, int]]:
        """(name, Redis key, N) of each limit that applies, key first."""
        entries = []
        if limits.key_rpm is not None:
            entries.append(("key", self.log_key("key", limits.key_id), limits.key_rpm))
        if limits.team_rpm is not None:
            entries.append(("team", self.log_key("team", limits.team_id), limits.team_rpm))
        return entries

    async def check(self, limits: Limits) -> Decision:
        """Admit one submission under `limits`, or raise RateLimited (429)."""
        return await self._check(self._entries(limits), what="submissions")

    async def check_counter(
        self, log: str, subject: object, limit: int, *, what: str, name: str = "team"
    ) -> Decision:
        """Admit one `what` under `limit` per minute in `subject`'s log named `log` (its
        own, apart from the submissions'), or raise RateLimited (429)."""
        return await self._check([(name, self.log_key(log, subject), limit)], what=what)

    async def _check(self, entries: list[tuple[str, str, int]], *, what: str) -> Decision:
        if not entries:
            return Decision()
        keys = [key for _, key, _ in entries]
        try:
            with RATE_LIMIT_CHECKS_IN_PROGRESS.track_inprogress():
                raw = await self._run(keys, [WINDOW_MS, *(n for _, _, n in entries)])
        except (RedisReplyError, OSError) as exc:  # RedisLost and TimeoutError are OSErrors
            return self._unavailable(exc)
        quotas = [
            Quota(
                name=name,
                limit=limit,
                remaining=max(0, int(raw[3 + 2 * i])),
                reset_seconds=max(1, math.ceil(int(raw[4 + 2 * i]) / 1000)),
            )
            for i, (name, _, limit) in enumerate(entries)
        ]
        decision = Decision(quotas)
        if not int(raw[0]):
            refused = quotas[int(raw[1]) - 1]
            if what == "submissions":
                TASKS_REJECTED.labels(f"rate_limited_{refused.name}").inc()
            raise RateLimited(
                f"{refused.name} rate limit of {refused.limit} {what} per minute reached; "
                f"retry in {refused.reset_seconds} s",
                headers={"Retry-After": str(refused.reset_seconds), **decision.headers()},
            )
        return decision

    async def _run(self, keys: list[str], args: list[int]) -> Any:
        """The script's answer. A connection lost or stalled is tried once more on a new one
        (if the lost answer had been counted, this counts it twice: a limit may refuse one
        early, never admit one over); the whole check stays within the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        for attempt in (1, 2):
            left = min(self._pipe.stall_seconds, deadline - loop.time())
            try:
                try:
                    return await self._pipe.call(
                        "EVALSHA", self._sha, len(keys), *keys, *args, seconds=left
                    )
                except RedisReplyError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    return await self._pipe.call(
                        "EVAL", CHECK_SCRIPT, len(keys), *keys, *args, seconds=left
                    )
            except OSError:  # lost, stalled, refused or timed out
                if attempt == 2 or deadline - loop.time() <= 0:
                    raise
        raise AssertionError("unreachable")

    def _unavailable(self, exc: Exception) -> Decision:
        RATE_LIMIT_ERRORS.labels(self._on_error).inc()
        extra = {"action": self._on_error, "error": type(exc).__name__}
        if isinstance(exc, RedisRefused):  # a setting to mend: say which (no secret in it)
            extra["reason"] = str(exc)
        logger.warning("rate limit store unreachable", extra=extra)
        if self._on_error == "deny":
            raise UpstreamUnavailable(
                "rate limits cannot be checked right now; retry shortly",
                headers={"Retry-After": "5"},
            ) from None
        return Decision()
