"""JSON logs with the request id; X-Request-ID accepted, generated and echoed."""

from __future__ import annotations

import io
import json
import logging

import httpx

from service.logs import configure_logging, request_id_var


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = await client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    hostile = await client.get("/healthz", headers={"X-Request-ID": "a b\tc" * 50})
    assert hostile.headers["x-request-id"] != "a b\tc" * 50


def test_log_lines_are_json_with_request_and_task_ids() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        token = request_id_var.set("req-1")
        logging.getLogger("service.test").info("task finished", extra={"task_id": "task-1"})
        request_id_var.reset(token)
        line = json.loads(stream.getvalue().splitlines()[-1])
        assert line["message"] == "task finished" and line["level"] == "INFO"
        assert line["request_id"] == "req-1" and line["task_id"] == "task-1"
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
