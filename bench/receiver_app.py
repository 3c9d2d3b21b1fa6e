"""The webhook receiver of bench/webhooks.py, in a process of its own so that the
receiving end is never the worker's bottleneck: a bare ASGI app under uvicorn (uvloop,
httptools) that answers 204 and notes when each webhook-id first arrived (requests without one are
answered, not noted).

GET /arrivals answers {webhook-id: unix time} of everything seen so far; GET /count the
number. Its own ceiling is measured by the benchmark with wrk before the worker runs.

    .venv/bin/python bench/receiver_app.py --port 8091
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import uvicorn

arrived: dict[str, float] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass  # the body is read whole, as a real receiver would
    if scope["method"] == "POST":
        seen = time.time()
        # Only webhooks are noted: the ceiling's wrk requests carry no webhook-id, and
        # counting them let the benchmark stop waiting before the worker's had arrived.
        if hook_id := dict(scope["headers"]).get(b"webhook-id", b"").decode():
            arrived.setdefault(hook_id, seen)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = orjson.dumps(arrived if scope["path"] == "/arrivals" else len(arrived))
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
