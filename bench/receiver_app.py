"""The webhook receiver of bench/webhooks.py, in a process of its own so that the
receiving end is never the worker's bottleneck: a bare ASGI app under uvicorn (uvloop,
httptools) that answers 204 and notes when each webhook-id first arrived (requests without one are
answered, not noted).

GET /arrivals answers {webhook-id: unix time} of everything seen so far; GET /count the
number; GET /count?at_least=N answers once N have arrived (or after 10 s), so the
benchmark waits without polling, which would take CPU from the worker on this machine.
Its own ceiling is measured by the benchmark with wrk before the worker runs.

    .venv/bin/python bench/receiver_app.py --port 8091
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn

arrived: dict[str, float] = {}
more = asyncio.Event()  # set and cleared on every new arrival, for the waiting GET /count


async def count_at_least(wanted: int) -> int:
    async with asyncio.timeout(10):
        while len(arrived) < wanted:
            await more.wait()
    return len(arrived)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass  # the body is read whole, as a real receiver would
    if scope["method"] == "POST":
        seen = time.time()
        # Only webhooks are noted: the ceiling's wrk requests carry no webhook-id, and
        # counting them let the benchmark stop waiting before the worker's had arrived.
        hook_id = dict(scope["headers"]).get(b"webhook-id", b"").decode()
        if hook_id and hook_id not in arrived:
            arrived[hook_id] = seen
            more.set()
            more.clear()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/arrivals":
        body = orjson.dumps(arrived)
    else:
        wanted = parse_qs(scope["query_string"].decode()).get("at_least", ["0"])[0]
        try:
            body = orjson.dumps(await count_at_least(int(wanted)))
        except TimeoutError:
            body = orjson.dumps(len(arrived))
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )
