"""1,000 sync waiters on one API process: all of them wait at once, each subscribed to its
task's notifications, and each that hangs up lets go. What waiting costs (CPU and RSS)
is measured by bench/waiters.py: a figure that depends on the machine's load is not
asserted here."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from tests.conftest import Process, settings_env
from tests.factories import make_team, task_body, wait_for

WAITERS = 1000


async def waiters(http: httpx.AsyncClient, url: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    match = re.search(r"^qgw_task_event_waiters (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


async def test_1000_sync_waiters_wait_together_and_let_go_when_they_hang_up(
    client: httpx.AsyncClient, settings: Settings, logs_dir: Path
) -> None:
    port = free_port()
    env = settings_env(settings.model_copy(update={"sync_max_wait_seconds": 120}))
    api = Process(["api", "--port", str(port)], env, logs_dir / "api-waiters.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/healthz")
        team = await make_team(client)
        limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            await http.get(f"{url}/v1/tasks", headers=team.headers)  # warm the process up
            held = [
                asyncio.create_task(
                    http.post(
                        f"{url}/v1/tasks/sync",
                        params={"timeout": 100},
                        json=task_body(),
                        headers=team.headers,
                    )
                )
                for _ in range(WAITERS)
            ]

            async def all_waiting() -> bool:
                return await waiters(http, url) == WAITERS

            await wait_for(all_waiting, timeout=60)
            for request in held:
                request.cancel()

        async def released() -> bool:
            async with httpx.AsyncClient() as probe:
                return await waiters(probe, url) == 0

        await wait_for(released, timeout=30)  # every hung-up waiter let go of its subscription
    finally:
        api.stop()
