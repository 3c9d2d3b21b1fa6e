"""`qingbo-gateway dev` on a bare machine: embedded Postgres and Redis, then the README's
curl walkthrough (submit, poll, cancel) against what it prints, and a terminal a person
can read: one line per task event, no JSON, no library chatter."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from service.dev import free_port
from tests.factories import task_body, wait_until


def _read_lines(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line)


def _wait_for_banner(lines: list[str], timeout: float = 120) -> str:
    wait_until(lambda: any("Ctrl-C to stop" in line for line in lines), timeout=timeout)
    return "".join(lines)


def test_dev_stack_serves_the_walkthrough(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "dev", "--port", str(port), "--data-dir", str(tmp_path)],
        env={**env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        banner = _wait_for_banner(lines)
        key = re.search(r"demo key\s+(qgw_\S+)", banner).group(1)  # type: ignore[union-attr]
        assert f"curl -s http://127.0.0.1:{port}/v1/tasks" in banner
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        )
        sim_url = re.search(r"simulator\s+(http://\S+)", banner).group(1)  # type: ignore[union-attr]
        sim = httpx.Client(base_url=sim_url)
        sim.put("/_sim/config", json={"queue_seconds": 0.2, "processing_seconds": 0.5})

        task = api.post("/v1/tasks", json=task_body()).json()
        assert task["status"] == "queued"
        wait_until(lambda: api.get(f"/v1/tasks/{task['task_id']}").json()["status"] == "completed")

        sim.put("/_sim/config", json={"queue_seconds": 60})
        queued = api.post("/v1/tasks", json=task_body()).json()
        cancelled = api.post(f"/v1/tasks/{queued['task_id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        # The terminal: a line for each of the task's events, and nothing for machines.
        tid = task["task_id"]
        events = ("task admitted", "task submitted", "task progress", "task finished")
        wait_until(lambda: all(any(e in line and tid in line for line in lines) for e in events))
        wait_until(lambda: any(queued["task_id"] in line and "cancelled" in line for line in lines))
        shown = "".join(lines)
        assert '{"time"' not in shown and "cron:" not in shown, shown[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
