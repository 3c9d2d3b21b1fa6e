"""`qingbo-gateway dev` on a bare machine: embedded Postgres and Redis, then the README's
curl walkthrough (submit, poll, cancel) against what it prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.dev import free_port
from tests.factories import task_body, wait_until


def _wait_for_banner(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if "Press Ctrl-C" in line:
            return seen
    raise AssertionError(f"dev stack did not come up:\n{seen}")


def test_dev_stack_serves_the_walkthrough(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "dev", "--port", str(port), "--data-dir", str(tmp_path)],
        env={**env, "QGW_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = _wait_for_banner(proc)
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
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
