"""Benchmark what waiting costs: 1,000 `POST /v1/tasks/sync` callers held on one API
process while their tasks stay queued at the simulator. They sleep on in-process events
woken by Postgres notifications, holding no connection and polling nothing, so the
process should stay near idle. CPU and RSS come from /proc (psutil); the floor is the
same process idle, with no waiters, measured in the same run.

    .venv/bin/python bench/waiters.py [--waiters 1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database, drop_database, redis_url  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402
from service.platform.db import migrate  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-of-at-least-32-chars"  # noqa: S105 (a throwaway local stack)
GOAL_CPU_SHARE = 0.10  # of one core, while every waiter waits
GOAL_KIB_PER_WAITER = 200


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def waiting(http: httpx.AsyncClient, url: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    match = re.search(r"^qgw_task_event_waiters (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


async def share_of_a_core(proc: psutil.Process, seconds: float) -> float:
    start, started = cpu_seconds(proc), asyncio.get_running_loop().time()
    await asyncio.sleep(seconds)  # the measurement window
    return (cpu_seconds(proc) - start) / (asyncio.get_running_loop().time() - started)


async def measure(url: str, proc: psutil.Process, args: argparse.Namespace) -> int:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        team = (await http.post("/admin/teams", json={"name": "bench"}, headers=admin)).json()
        key = (await http.post(f"/admin/teams/{team['id']}/keys", json={}, headers=admin)).json()
    headers = {"Authorization": f"Bearer {key['key']}"}
    body = {"model": "minimax-hailuo-2.3", "prompt": "a lighthouse at dawn", "duration": 6}
    limits = httpx.Limits(max_connections=args.waiters + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await http.get(f"{url}/v1/tasks", headers=headers)  # warm the process up
        idle = await share_of_a_core(proc, args.seconds)
        rss_before = proc.memory_info().rss
        held = [
            asyncio.create_task(
                http.post(
                    f"{url}/v1/tasks/sync", params={"timeout": 200}, json=body, headers=headers
                )
            )
            for _ in range(args.waiters)
        ]
        while await waiting(http, url) < args.waiters:  # noqa: ASYNC110 (another process's state)
            await asyncio.sleep(0.2)
        busy = await share_of_a_core(proc, args.seconds)
        per_waiter_kib = (proc.memory_info().rss - rss_before) / args.waiters / 1024
        for request in held:
            request.cancel()
    cpu_ok = busy <= GOAL_CPU_SHARE
    rss_ok = per_waiter_kib <= GOAL_KIB_PER_WAITER
    print(f"\n{args.waiters} sync waiters on one API process, {args.seconds:g} s windows")
    print("| what | waiting | idle (floor) | goal |")
    print("| --- | --- | --- | --- |")
    print(
        f"| CPU, share of one core | {busy * 100:.1f} % | {idle * 100:.1f} % | "
        f"<= {GOAL_CPU_SHARE * 100:.0f} % {'PASS' if cpu_ok else 'MISS'} |"
    )
    print(
        f"| RSS per waiter | {per_waiter_kib:.1f} KiB | - | <= {GOAL_KIB_PER_WAITER} KiB "
        f"{'PASS' if rss_ok else 'MISS'} |"
    )
    return 0 if cpu_ok and rss_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    base, db = database()
    migrate(db)
    sim_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "QGW_DATABASE_URL": db,
        "QGW_REDIS_URL": redis_url(),
        "QGW_ARQ_QUEUE_NAME": f"qgw-bench-waiters-{os.getpid()}",
        "QGW_QINGBO_BASE_URL": f"http://127.0.0.1:{sim_port}",
        "QGW_QINGBO_API_KEY": "sim-key",
        "QGW_ADMIN_TOKEN": ADMIN_TOKEN,
        "QGW_SYNC_MAX_WAIT_SECONDS": "300",
        "QGW_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "service"]
    children = [
        subprocess.Popen([*cmd, "simulator", "--port", str(sim_port)], env=env),
        subprocess.Popen([*cmd, "api", "--port", str(api_port)], env=env),
    ]
    try:
        wait_until_healthy(f"http://127.0.0.1:{sim_port}/_sim/config")
        # No worker runs: every task stays queued, every caller keeps waiting.
        url = f"http://127.0.0.1:{api_port}"
        wait_until_healthy(f"{url}/healthz")
        return asyncio.run(measure(url, psutil.Process(children[1].pid), args))
    finally:
        for child in children:
            child.terminate()
            child.wait(timeout=15)
        asyncio.run(drop_database(base, db))


if __name__ == "__main__":
    sys.exit(main())
