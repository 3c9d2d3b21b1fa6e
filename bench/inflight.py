"""Benchmark 10,000 tasks in flight on one worker process, tracked by Qingbo's callbacks.

The simulator (its own process) holds every task for --processing-seconds and calls back
on `processing` and on the end; one API process takes the submissions and the callbacks;
one worker process (QGW_UPSTREAM_MAX_IN_FLIGHT raised to --tasks) dispatches and tracks
them. The tasks are admitted first, then the worker starts, so all of them are at Qingbo
at once before the first one ends. It prints:

- completion latency: the gateway's `completed_at` minus the simulator's end of the same
  task, p50/p99/max (goal p99 <= 1 s);
- the worker's CPU (share of one core) while the tasks are in flight, and its peak RSS
  (goals <= 1 core, <= 200 MB);
- reads of each task at the simulator against what the adaptive schedule allows for its
  time in flight (QGW_POLL_*, at the fastest jitter) plus one per callback (a callback
  only triggers a re-read): no poll storm (goal: reads <= allowed).

    .venv/bin/python bench/inflight.py [--tasks 10000] [--processing-seconds 90]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database, drop_database, print_table, redis_url, verdict  # noqa: E402
from bench.submit import BODY  # noqa: E402
from service.config import Settings  # noqa: E402
from service.db import migrate  # noqa: E402
from service.dev import free_port, wait_until_healthy  # noqa: E402

ADMIN_TOKEN = "bench-admin"  # noqa: S105 (a throwaway local stack)
CALLBACKS_PER_TASK = 2  # the simulator's `processing` and terminal callbacks


def allowed_reads(settings: Settings, seconds_in_flight: float) -> int:
    """Reads the adaptive schedule makes in `seconds_in_flight` at its fastest (jitter
    0.9), plus the re-read each callback triggers."""
    reads, at, unchanged = 0, 0.0, 0
    while True:
        delay = settings.poll_initial_seconds * settings.poll_backoff_factor**unchanged
        at += min(settings.poll_max_seconds_with_callbacks, delay) * 0.9
        if at > seconds_in_flight:
            return reads + CALLBACKS_PER_TASK
        reads, unchanged = reads + 1, unchanged + 1


async def admit(gw: str, key: str, n: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=gw, headers=headers, limits=limits) as http:
        semaphore = asyncio.Semaphore(32)

        async def one() -> None:
            async with semaphore:
                answer = await http.post("/v1/tasks", json=BODY)
                answer.raise_for_status()

        await asyncio.gather(*(one() for _ in range(n)))


class Sampler:
    """The worker's CPU seconds and RSS, sampled twice a second."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self._task = asyncio.create_task(self._sample())

    def cpu_seconds(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    async def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            await asyncio.sleep(0.5)  # a sampling period, not a wait for a condition

    def stop(self) -> None:
        self._task.cancel()


async def count(db: asyncpg.Connection, condition: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM tasks WHERE {condition}"))  # noqa: S608


async def wait_until(probe: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.2)  # polling the database until the deadline


async def run(args: argparse.Namespace, db_url: str, r_url: str) -> list[tuple[str, str, str]]:
    n = args.tasks
    sim_port, api_port = free_port(), free_port()
    sim, gw = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "QGW_DATABASE_URL": db_url,
        "QGW_REDIS_URL": r_url,
        "QGW_ADMIN_TOKEN": ADMIN_TOKEN,
        "QGW_ARQ_QUEUE_NAME": f"qgw-bench:{secrets.token_hex(3)}",
        "QGW_LOG_LEVEL": "WARNING",
        "QGW_QINGBO_BASE_URL": sim,
        "QGW_QINGBO_API_KEY": "sim-key",
        "QGW_SIM_API_KEY": "sim-key",
        "QGW_PUBLIC_BASE_URL": gw,
        "QGW_UPSTREAM_MAX_IN_FLIGHT": str(n),
        "QGW_UPSTREAM_MAX_SUBMITS_PER_SECOND": "100000",
        "QGW_WORKER_HTTP_PORT": "0",
    }
    settings = Settings()  # the poll schedule the worker runs with (its defaults)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "simulator", "--port", str(sim_port)], env=env
        ),
        subprocess.Popen(
            [sys.executable, "-m", "service", "api", "--port", str(api_port)], env=env
        ),
    ]
    db = await asyncpg.connect(db_url)
    try:
        wait_until_healthy(f"{sim}/_sim/config")
        wait_until_healthy(f"{gw}/healthz")
        config = {"queue_seconds": 1, "processing_seconds": args.processing_seconds}
        httpx.put(f"{sim}/_sim/config", json=config).raise_for_status()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        team = httpx.post(f"{gw}/admin/teams", json={"name": "inflight"}, headers=admin).json()
        key = httpx.post(f"{gw}/admin/teams/{team['id']}/keys", json={}, headers=admin).json()
        started = time.monotonic()
        await admit(gw, key["key"], n)
        print(f"  {n} admitted in {time.monotonic() - started:.1f} s", file=sys.stderr)

        worker = subprocess.Popen([sys.executable, "-m", "service", "worker"], env=env)
        procs.append(worker)
        sampler = Sampler(worker.pid)
        started = time.monotonic()

        async def all_at_qingbo() -> bool:
            return await count(db, "submitted_at IS NOT NULL") == n

        await wait_until(all_at_qingbo, "every task submitted", args.processing_seconds)
        dispatched = time.monotonic() - started
        print(f"  {n} at Qingbo after {dispatched:.1f} s", file=sys.stderr)
        cpu_before, wall_before = sampler.cpu_seconds(), time.monotonic()

        async def first_done() -> bool:
            return await count(db, "status = 'completed'") > 0

        await wait_until(first_done, "a first task completed", args.processing_seconds + 60)
        in_flight_cpu = (sampler.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)

        async def all_done() -> bool:
            return await count(db, "status IN ('completed', 'failed')") == n

        await wait_until(all_done, "every task ended", 300)
        sampler.stop()
        rows = await db.fetch(
            "SELECT upstream_task_id, status, submitted_at, completed_at FROM tasks"
        )
        sim_tasks = {t["task_id"]: t for t in httpx.get(f"{sim}/_sim/tasks").json()["tasks"]}
    finally:
        await db.close()
        for proc in procs:
            proc.terminate()
            proc.wait()

    latencies, reads, allowed = [], 0, 0
    for row in rows:
        at_sim = sim_tasks[row["upstream_task_id"]]
        latencies.append(row["completed_at"].timestamp() * 1000 - at_sim["finished_at"])
        reads += at_sim["reads"]
        in_flight = at_sim["finished_at"] / 1000 - row["submitted_at"].timestamp()
        allowed += allowed_reads(settings, in_flight)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    failed = sum(1 for r in rows if r["status"] != "completed")
    rss_mb = sampler.peak_rss / 1e6
    p50, late = latencies[len(latencies) // 2], latencies[-1]
    cpu_ok, rss_ok, reads_ok = in_flight_cpu <= 1, rss_mb <= 200, reads <= allowed
    return [
        ("tasks at Qingbo at once", f"{n}", ""),
        ("dispatch: all submitted after (s)", f"{dispatched:.1f}", ""),
        ("dispatch rate (submissions/s)", f"{n / dispatched:.0f}", ""),
        ("failed (the simulator fails none)", f"{failed}", f"0 {verdict(failed == 0)}"),
        ("completion after the simulator's end, p50 (ms)", f"{p50:.0f}", ""),
        (
            "completion after the simulator's end, p99 (ms)",
            f"{p99:.0f}",
            f"<= 1000 {verdict(p99 <= 1000)}",
        ),
        ("completion after the simulator's end, max (ms)", f"{late:.0f}", ""),
        (
            "worker CPU, every task in flight (cores)",
            f"{in_flight_cpu:.2f}",
            f"<= 1 {verdict(cpu_ok)}",
        ),
        ("worker peak RSS (MB)", f"{rss_mb:.0f}", f"<= 200 {verdict(rss_ok)}"),
        ("reads at the simulator, per task", f"{reads / n:.2f}", ""),
        (
            "reads the schedule + callbacks allow, per task",
            f"{allowed / n:.2f}",
            f">= reads {verdict(reads_ok)}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--processing-seconds", type=float, default=90.0)
    args = parser.parse_args()
    base, db_url = database()
    r_url = redis_url()
    migrate(db_url)
    try:
        rows = asyncio.run(run(args, db_url, r_url))
    finally:
        asyncio.run(drop_database(base, db_url))
    print_table(f"{args.tasks} tasks in flight on one worker process, callbacks on", rows)


if __name__ == "__main__":
    main()
