"""Bad configuration stops a role at start and names what is wrong (issue 15, point 11);
each Base64 image is capped (point 9)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import make_team, task_body

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def start(role: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *role.split()],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"price": "0"},
            "QGW_PRICE_TABLE: price table: minimax-hailuo-2.3.768p must be more than 0",
        ),
        ({"price": "-1"}, "QGW_PRICE_TABLE: minimax-hailuo-2.3.768p: '-1' must be >= 0"),
        ({"QGW_WEBHOOK_RETRY_SCHEDULE": "5,soon"}, "QGW_WEBHOOK_RETRY_SCHEDULE:"),
        ({"QGW_QINGBO_API_VERSION": "2025-01"}, "QGW_QINGBO_API_VERSION:"),
        ({"QGW_BUDGET_TIMEZONE": "Mars/Olympus"}, "QGW_BUDGET_TIMEZONE:"),
        (
            {"QGW_WEBHOOK_MAX_CONCURRENT_ATTEMPTS": "250"},
            "QGW_WEBHOOK_MAX_CONCURRENT_ATTEMPTS must be below QGW_WORKER_MAX_JOBS",
        ),
        (
            {"QGW_UPSTREAM_MAX_SUBMIT_ATTEMPTS": "8"},
            "QGW_UPSTREAM_MAX_SUBMIT_ATTEMPTS: replaced by QGW_UPSTREAM_RETRY_DEADLINE_SECONDS",
        ),
    ],
)
def test_a_role_refuses_to_start_on_bad_configuration(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    settings = dict(env)
    if "price" in settings:
        table = tmp_path / "prices.json"
        price = settings.pop("price")
        table.write_text(
            json.dumps({"models": {"minimax-hailuo-2.3": {"768p": price, "1080p": "0.07"}}})
        )
        settings["QGW_PRICE_TABLE"] = str(table)
    for role in ("api --port 0", "worker --burst"):
        refused = start(role, tmp_path, **settings)
        assert refused.returncode == 2, (role, refused.stderr[-2000:])
        assert f"configuration error: {named}" in refused.stderr, refused.stderr[-2000:]


async def test_each_image_is_capped_before_it_is_decoded(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Any
) -> None:
    team = await make_team(client)
    limit = res.settings.max_image_bytes
    fits = base64.b64encode(PNG + b"\x00" * (limit - len(PNG))).decode()
    too_big = base64.b64encode(PNG + b"\x00" * (limit - len(PNG) + 1)).decode()
    ok = await client.post("/v1/tasks", json=task_body(image_urls=[fits]), headers=team.headers)
    assert ok.status_code == 200, ok.text[:300]
    refused = await client.post(
        "/v1/tasks", json=task_body(first_frame_image=too_big), headers=team.headers
    )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "first_frame_image" and f"at most {limit} bytes" in error["message"]
    assert await db.fetchval("SELECT count(*) FROM tasks") == 1
