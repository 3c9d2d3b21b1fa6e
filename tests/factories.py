"""Small factories over the real admin API, and waiting on conditions with a deadline."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T = TypeVar("T")


@dataclass
class TeamKey:
    team: dict[str, Any]
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_team(client: httpx.AsyncClient, **overrides: Any) -> TeamKey:
    body = {"name": f"team-{secrets.token_hex(4)}", **overrides}
    team = await client.post("/admin/teams", json=body, headers=ADMIN)
    assert team.status_code == 201, team.text
    key = await client.post(f"/admin/teams/{team.json()['id']}/keys", json={}, headers=ADMIN)
    assert key.status_code == 201, key.text
    return TeamKey(team=team.json(), key=key.json()["key"])


def task_body(**overrides: Any) -> dict[str, Any]:
    return {
        "model": "minimax-hailuo-2.3",
        "prompt": f"a fox in the snow {secrets.token_hex(3)}",
        **overrides,
    }


async def submit(client: httpx.AsyncClient, team: TeamKey, **overrides: Any) -> dict[str, Any]:
    answer = await client.post("/v1/tasks", json=task_body(**overrides), headers=team.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def wait_until(probe: Callable[[], object], *, timeout: float = 30.0) -> None:
    """Synchronous twin of wait_for, for code outside the event loop."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)  # poll until the deadline


async def task_status(client: httpx.AsyncClient, team: TeamKey, task_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/tasks/{task_id}", headers=team.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def wait_terminal(
    client: httpx.AsyncClient, team: TeamKey, task_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task = await task_status(client, team, task_id)
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    return await wait_for(probe, timeout=timeout)
