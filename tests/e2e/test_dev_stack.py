"""`qingbo-gateway dev` on a bare machine: embedded Postgres and Redis, then every example
of the README's walkthrough run as written against what it prints, and a terminal a
person can read: one line per task event, no JSON, no library chatter."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.cli.dev import free_port
from tests.e2e.readme import Example, examples, expected_keys, expected_lines
from tests.factories import task_body, wait_until

PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAAB"
    "JRU5ErkJggg=="
)


@dataclass
class DevStack:
    url: str
    key: str
    admin_token: str
    simulator: str
    lines: list[str]


def _read_lines(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line)


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the banner:\n{text}"
    return match.group(1)


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    port = free_port()
    data = tmp_path_factory.mktemp("dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "dev", "--port", str(port), "--data-dir", str(data)],
        env={**env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        wait_until(lambda: any("Ctrl-C to stop" in line for line in lines), timeout=120)
        banner = "".join(lines)
        assert f"curl -s http://127.0.0.1:{port}/v1/tasks" in banner
        yield DevStack(
            url=f"http://127.0.0.1:{port}",
            key=_found(r"demo key\s+(qgw_\S+)", banner),
            admin_token=_found(r"admin\s+Authorization: Bearer (\S+)", banner),
            simulator=_found(r"simulator\s+(http://\S+)", banner),
            lines=lines,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_dev_stack_serves_tasks_and_a_readable_terminal(dev_stack: DevStack) -> None:
    api = httpx.Client(base_url=dev_stack.url, headers={"Authorization": f"Bearer {dev_stack.key}"})
    sim = httpx.Client(base_url=dev_stack.simulator)
    sim.put("/_sim/config", json={"queue_seconds": 0.2, "processing_seconds": 0.5})

    task = api.post("/v1/tasks", json=task_body()).json()
    assert task["status"] == "queued"
    wait_until(lambda: api.get(f"/v1/tasks/{task['task_id']}").json()["status"] == "completed")

    sim.put("/_sim/config", json={"queue_seconds": 60})
    queued = api.post("/v1/tasks", json=task_body()).json()
    cancelled = api.post(f"/v1/tasks/{queued['task_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    # The terminal: a line for each of the task's events, and nothing for machines.
    lines, tid = dev_stack.lines, task["task_id"]
    events = ("task admitted", "task submitted", "task progress", "task finished")
    wait_until(lambda: all(any(e in line and tid in line for line in lines) for e in events))
    wait_until(lambda: any(queued["task_id"] in line and "cancelled" in line for line in lines))
    shown = "".join(lines)
    assert '{"time"' not in shown and "cron:" not in shown, shown[-2000:]


def _run(example: Example, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-c", example.command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, f"{example.command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _check(example: Example, output: str) -> None:
    """The answer has what the README shows: the same JSON when it shows a whole one, else
    every member it names; never an error the README does not announce."""
    shown = expected_lines(example)
    whole = example.expected_json()
    if whole is not None:
        assert whole == example.parse_json(output), f"{example.command}\n{output}"
        return
    for key in expected_keys(example):
        assert f'"{key}":' in output, f"{key!r} missing from {example.command}\n{output}"
    for line in shown:
        header = re.match(r"^([A-Z][A-Za-z-]+): (\S+)$", line)
        if header and " -si " in f" {example.command} ":
            assert line.lower() in output.lower(), f"{line!r} missing\n{output}"
    body = example.parse_json(output)
    if isinstance(body, dict) and set(body) == {"error"}:  # the error envelope
        code = body["error"]["code"]
        assert example.announces(code), f"{example.command} answered {body}"


def _wait_completed(dev_stack: DevStack, task_id: str) -> None:
    user = httpx.Client(
        base_url=dev_stack.url, headers={"Authorization": f"Bearer {dev_stack.key}"}
    )
    wait_until(lambda: user.get(f"/v1/tasks/{task_id}").json()["status"] == "completed")


def test_every_walkthrough_example_runs_as_written(dev_stack: DevStack, tmp_path: Path) -> None:
    """The README's examples, run by bash with only its placeholders filled in
    (KEY, GW, ADMIN, TEAM and the example task id), in the order written."""
    sim = httpx.Client(base_url=dev_stack.simulator)
    sim.put("/_sim/config", json={"queue_seconds": 0.2, "processing_seconds": 0.5})
    admin = httpx.Client(
        base_url=dev_stack.url, headers={"Authorization": f"Bearer {dev_stack.admin_token}"}
    )
    teams = admin.get("/admin/teams").json()["data"]
    team = next(t for t in teams if t["name"] == "demo")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QGW_")},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KEY": dev_stack.key,
        "GW": dev_stack.url,
        "ADMIN": dev_stack.admin_token,
        "TEAM": team["id"],
        "QGW_GATEWAY_URL": dev_stack.url,
        "QGW_API_KEY": dev_stack.key,
    }
    (tmp_path / "first-frame.png").write_bytes(base64.b64decode(PNG_1X1))
    task_id = ""
    ran = 0
    written = examples("Walkthrough (against `scripts/dev`)") + examples("Results without polling")
    for example in written:
        if task_id:
            example = example.with_task_id(task_id)
        elif "task-2cc4..." in example.command:
            raise AssertionError("an example uses the task id before one is submitted")
        output = _run(example, env, tmp_path)
        ran += 1
        if example.is_cli():
            for pattern in example.cli_patterns():
                assert re.search(pattern, output), f"{pattern!r} not in\n{output}"
            continue
        _check(example, output)
        if not task_id and '"task_id"' in output:
            # The walkthrough's later calls name the first task; it finishes first, as the
            # answers shown for them are of a finished task.
            task_id = example.parse_json(output)["task_id"]
            _wait_completed(dev_stack, task_id)
    assert ran == len(written) >= 19 and (tmp_path / "boat.mp4").stat().st_size > 0
