"""The human CLI against the real API and worker: in process (click's runner), and once as
the child process a user starts."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import ADMIN, Ran, TeamKey, invoke_cli, make_team, submit

pytestmark = pytest.mark.usefixtures("api_server")


def run_cli(api_server: str, team: TeamKey, *args: str) -> subprocess.CompletedProcess[str]:
    """`qingbo-gateway ARGS` as a child process, as a user runs it."""
    env = {**os.environ, "QGW_GATEWAY_URL": api_server, "QGW_API_KEY": team.key, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def cli(api_server: str, team: TeamKey, *args: str) -> Ran:
    """`qingbo-gateway ARGS` in this process."""
    env = {"QGW_GATEWAY_URL": api_server, "QGW_API_KEY": team.key, "COLUMNS": "200"}
    return await invoke_cli(list(args), env)


async def test_generate_waits_with_progress_and_downloads(
    client: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    start_worker: Any,
    api_server: str,
    tmp_path: Path,
) -> None:
    team = await make_team(client)
    start_worker()
    target = tmp_path / "out.mp4"
    done = run_cli(
        api_server,
        team,
        "generate",
        "--prompt",
        "a paper boat on a river",
        "--camera",
        "dolly-in",
        "--download",
        str(target),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("task task-") and "queued" in lines[0] and "cost 0.3" in lines[0]
    assert any(line.startswith("video: http") for line in lines)
    assert lines[-1].startswith(f"saved {target}")
    assert target.stat().st_size > 0
    assert done.stderr == ""


async def test_budget_refusal_is_one_line_naming_the_budget(
    client: httpx.AsyncClient, api_server: str
) -> None:
    team = await make_team(client)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "0.10"}]},
        headers=ADMIN,
    )
    refused = await cli(api_server, team, "generate", "--prompt", "too expensive", "--wait")
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: team month budget exceeded: limit 0.10 USD")
    assert "resets at" in line and "(budget_exceeded, HTTP 402)" in line


async def test_tasks_and_usage_commands(client: httpx.AsyncClient, api_server: str) -> None:
    team = await make_team(client, max_concurrent_tasks=5)
    await client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "day", "limit_usd": "25.00"}]},
        headers=ADMIN,
    )
    task = await submit(client, team)
    listed = await cli(api_server, team, "tasks", "list")
    assert listed.returncode == 0 and task["task_id"] in listed.stdout
    shown = await cli(api_server, team, "tasks", "show", task["task_id"])
    assert shown.returncode == 0 and f'"task_id": "{task["task_id"]}"' in shown.stdout
    cancelled = await cli(api_server, team, "tasks", "cancel", task["task_id"])
    assert cancelled.stdout.strip() == f"task {task['task_id']} cancelled"
    usage = await cli(api_server, team, "usage")
    assert usage.returncode == 0
    assert "25.00" in usage.stdout and "active tasks: 0 of 5" in usage.stdout
    # The spend of the current windows shows even for a team no budget covers.
    unbudgeted = await make_team(client)
    done = await submit(client, unbudgeted)
    await client.post(f"/v1/tasks/{done['task_id']}/cancel", headers=unbudgeted.headers)
    spend = await cli(api_server, unbudgeted, "usage")
    assert spend.returncode == 0 and "no budgets apply to this team" in spend.stdout
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in spend.stdout.splitlines()]
    tasks_by_window = {row[0]: row[3] for row in rows if row and row[0] in WINDOWS}
    assert tasks_by_window == dict.fromkeys(WINDOWS, "1"), spend.stdout
    missing = await cli(api_server, team, "tasks", "show", "task-nope")
    assert missing.returncode == 1 and "not found (not_found, HTTP 404)" in missing.stderr


WINDOWS = ("day", "week", "month")

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAAB"
PNG_1X1 += "JRU5ErkJggg=="


async def test_generate_sends_a_local_image_as_base64(
    client: httpx.AsyncClient, api_server: str, tmp_path: Path
) -> None:
    team = await make_team(client)
    image = tmp_path / "first-frame.png"
    image.write_bytes(base64.b64decode(PNG_1X1))
    sent = await cli(api_server, team, "generate", "--prompt", "it moves", "--image", str(image))
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.split()[1]
    task = (await client.get(f"/v1/tasks/{task_id}", headers=team.headers)).json()
    assert task["action"] == "image2video" and len(task["image_urls"]) == 1
    missing = await cli(api_server, team, "generate", "--prompt", "x", "--image", "nope.png")
    assert (
        missing.returncode == 1 and "neither an http(s) URL nor a readable file" in missing.stderr
    )
