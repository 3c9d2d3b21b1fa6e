"""Benchmark 10,000 tasks in flight on one worker process, tracked by Qingbo's callbacks.

The simulator (its own process) holds every task for --processing-seconds and calls back
on `processing` and on the end; one API process takes the submissions and the callbacks;
one worker process (QGW_UPSTREAM_MAX_IN_FLIGHT raised to --tasks) dispatches and tracks
them. The tasks are submitted evenly over --processing-seconds, so that all of them are
at Qingbo when the first ends, and then they end at the rate they came (a steady state
of --tasks in flight). It prints:

- completion latency: when the gateway recorded the end (`updated_at`) minus the
  simulator's end of the same task, p50/p99/max (goal p99 <= 1 s);
- the worker's CPU (share of one core) while the tasks are in flight, and its peak RSS
  (goals <= 1 core, <= 200 MB);
- reads of each task at the simulator against what the adaptive schedule allows for its
  time in flight (QGW_POLL_*_WITH_CALLBACKS, at the fastest jitter) plus one per
  callback (a callback only triggers a re-read): no poll storm (goal: reads <= allowed).

    .venv/bin/python bench/inflight.py [--tasks 10000] [--processing-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.stack import ADMIN_TOKEN, in_own_database, print_table, stack_env, verdict  # noqa: E402
from bench.submit import BODY  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402
from service.config import Settings  # noqa: E402

CALLBACKS_PER_TASK = 2  # the simulator's `processing` and terminal callbacks


def allowed_reads(settings: Settings, seconds_in_flight: float) -> int:
    """Reads the adaptive schedule makes in `seconds_in_flight` at its fastest (jitter
    0.9), plus the re-read each callback triggers."""
    reads, at, unchanged = 0, 0.0, 0
    while True:
        delay = settings.first_poll_seconds * settings.poll_backoff_factor**unchanged
        at += min(settings.poll_max_seconds_with_callbacks, delay) * 0.9
        if at > seconds_in_flight:
            return reads + CALLBACKS_PER_TASK
        reads, unchanged = reads + 1, unchanged + 1


async def admit(gw: str, key: str, n: int, *, seconds: float) -> None:
    """Submit n tasks evenly over `seconds`, 16 at a time at most."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=gw, headers=headers, limits=limits) as http:
        semaphore = asyncio.Semaphore(16)
        start = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i * seconds / n - time.monotonic()))  # pacing
            async with semaphore:
                answer = await http.post("/v1/tasks", json=BODY)
                answer.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))


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
    env = stack_env(
        db_url,
        r_url,
        qingbo_base_url=sim,
        qingbo_api_key="sim-key",
        sim_api_key="sim-key",
        public_base_url=gw,
        upstream_max_in_flight=str(n),
        upstream_max_submits_per_second="100000",
        upstream_submit_burst="1000",
        dispatch_batch_size="1000",
        worker_http_port="0",
    )
    # The poll schedule the worker runs with: its defaults, with callbacks on.
    settings = Settings(public_base_url=gw)
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
        worker = subprocess.Popen([sys.executable, "-m", "service", "worker"], env=env)
        procs.append(worker)
        wait_until_healthy(f"{gw}/healthz")
        sampler = Sampler(worker.pid)
        # Steady state: n tasks over one task's time at Qingbo, so that n are in flight
        # when the first ends, and they end at the rate they arrived (n / P per second).
        started = time.monotonic()
        admitting = asyncio.create_task(admit(gw, key["key"], n, seconds=args.processing_seconds))

        async def in_flight() -> int:
            return await count(db, "submitted_at IS NOT NULL AND dispatch_state <> 'done'")

        async def nearly_all_at_qingbo() -> bool:
            return await in_flight() >= 0.95 * n

        await wait_until(nearly_all_at_qingbo, "95 % in flight", 2 * args.processing_seconds)
        cpu_before, wall_before = sampler.cpu_seconds(), time.monotonic()
        peak = 0

        async def all_done() -> bool:
            nonlocal peak
            peak = max(peak, await in_flight())
            return await count(db, "status IN ('completed', 'failed')") == n

        await wait_until(all_done, "every task ended", 3 * args.processing_seconds + 120)
        in_flight_cpu = (sampler.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        await admitting
        took = time.monotonic() - started
        sampler.stop()
        rows = await db.fetch(
            "SELECT upstream_task_id, status, submitted_at, updated_at FROM tasks"
        )
        sim_tasks = {t["task_id"]: t for t in httpx.get(f"{sim}/_sim/tasks").json()["tasks"]}
    finally:
        await db.close()
        for proc in procs:
            proc.terminate()
            proc.wait()

    latencies, reads, allowed, ends = [], 0, 0, []
    for row in rows:
        at_sim = sim_tasks[row["upstream_task_id"]]
        # updated_at: when the gateway recorded the end (completed_at is Qingbo's own time).
        latency = row["updated_at"].timestamp() * 1000 - at_sim["finished_at"]
        latencies.append(latency)
        ends.append((at_sim["finished_at"], latency))
        reads += at_sim["reads"]
        in_flight = at_sim["finished_at"] / 1000 - row["submitted_at"].timestamp()
        allowed += allowed_reads(settings, in_flight)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    first_end = min(at for at, _ in ends)
    late_at = [(at - first_end) / 1000 for at, latency in ends if latency > 1000] or [0.0]
    failed = sum(1 for r in rows if r["status"] != "completed")
    rss_mb = sampler.peak_rss / 1e6
    p50, late = latencies[len(latencies) // 2], latencies[-1]
    cpu_ok, rss_ok, reads_ok = in_flight_cpu <= 1, rss_mb <= 200, reads <= allowed
    return [
        ("tasks submitted, evenly over the time one takes", f"{n}", ""),
        (
            "tasks at Qingbo at once, at the peak",
            f"{peak}",
            f">= {0.95 * n:.0f} {verdict(peak >= 0.95 * n)}",
        ),
        ("tasks ending per second", f"{n / args.processing_seconds:.0f}", ""),
        ("whole run (s)", f"{took:.0f}", ""),
        ("failed (the simulator fails none)", f"{failed}", f"0 {verdict(failed == 0)}"),
        ("completion after the simulator's end, p50 (ms)", f"{p50:.0f}", ""),
        (
            "completion after the simulator's end, p99 (ms)",
            f"{p99:.0f}",
            f"<= 1000 {verdict(p99 <= 1000)}",
        ),
        ("completion after the simulator's end, max (ms)", f"{late:.0f}", ""),
        ("ends later than 1 s: how many", f"{sum(1 for x in latencies if x > 1000)}", ""),
        (
            "ends later than 1 s: from/to, s after the first end",
            f"{min(late_at):.0f}-{max(late_at):.0f}",
            "",
        ),
        (
            "worker CPU, 95 % in flight to the end (cores)",
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
    parser.add_argument("--processing-seconds", type=float, default=120.0)
    args = parser.parse_args()
    rows = in_own_database(lambda db_url, r_url: run(args, db_url, r_url))
    print_table(f"{args.tasks} tasks in flight on one worker process, callbacks on", rows)


if __name__ == "__main__":
    main()
