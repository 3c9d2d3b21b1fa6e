"""1,000 sync waiters on one API process cost almost nothing while they wait: they sleep on
in-process events woken by Postgres notifications, holding no connection and polling
nothing. Measured on a dedicated API process (CPU and RSS from /proc via psutil)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import psutil

from service.config import Settings
from service.dev import free_port, wait_until_healthy
from tests.conftest import Process, settings_env
from tests.factories import make_team, task_body, wait_for

WAITERS = 1000
WINDOW_SECONDS = 3.0


async def waiters(http: httpx.AsyncClient, url: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    match = re.search(r"^qgw_task_event_waiters (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


async def test_1000_sync_waiters_cost_almost_nothing(
    client: httpx.AsyncClient, settings: Settings, logs_dir: Path
) -> None:
    port = free_port()
    env = settings_env(settings.model_copy(update={"sync_max_wait_seconds": 120}))
    api = Process(["api", "--port", str(port)], env, logs_dir / "api-waiters.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/healthz")
        assert api.proc is not None
        proc = psutil.Process(api.proc.pid)
        team = await make_team(client)
        limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            await http.get(f"{url}/v1/tasks", headers=team.headers)  # warm the process up
            rss_before = proc.memory_info().rss
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
            cpu_start, wall_start = proc.cpu_times(), asyncio.get_running_loop().time()
            await asyncio.sleep(WINDOW_SECONDS)  # the measurement window, not a wait
            cpu_end, wall_end = proc.cpu_times(), asyncio.get_running_loop().time()
            rss_during = proc.memory_info().rss
            busy = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
            cpu_share = busy / (wall_end - wall_start)
            per_waiter_kib = (rss_during - rss_before) / WAITERS / 1024
            print(
                f"\n{WAITERS} waiters on one API process: CPU {cpu_share * 100:.1f} % of one "
                f"core while waiting; RSS {rss_before / 2**20:.1f} -> {rss_during / 2**20:.1f} "
                f"MiB ({per_waiter_kib:.1f} KiB per waiter, request and socket included)"
            )
            assert cpu_share < 0.10  # idle waiting: no polling, no per-waiter timers firing
            assert per_waiter_kib < 200
            for request in held:
                request.cancel()

        async def released() -> bool:
            async with httpx.AsyncClient() as probe:
                return await waiters(probe, url) == 0

        await wait_for(released, timeout=30)  # every hung-up waiter let go of its subscription
    finally:
        api.stop()
