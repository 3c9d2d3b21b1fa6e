"""httpx's interface on aiohttp's connection pool, for the outbound calls where httpcore's
CPU per request shows: webhook delivery and reads of Qingbo's tasks.

httpcore's own transport costs several times this one's CPU per POST (bench/webhooks.py
prints both), and with 10,000 tasks in flight httpx and httpcore were the largest share of
the worker's CPU reading them (bench/inflight.py under py-spy;
docs/decisions/016-aiohttp-transport.md). What the callers rely on is kept: no
redirects, sni_hostname, timeouts, streaming.

Not for calls Qingbo may act on (submit, cancel): the transport maps a server disconnect
after sending to ConnectTimeout, which the Qingbo client must read as "not sent" (safe to
send again), so a submission could be paid twice (upstream/client.py keeps httpcore there).
"""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport


def aiohttp_client(*, timeout: httpx.Timeout) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=AiohttpTransport(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            trust_env=False,
        ),
        follow_redirects=False,
        timeout=timeout,
        trust_env=False,
    )
