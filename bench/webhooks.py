"""Benchmark webhook delivery: from a task's terminal state to the receiver's answer.

One worker process (`qingbo-gateway worker`) delivers to a real HTTP receiver on loopback.
1,000 tasks are finished through the gateway's own terminal transition (`finish()`, which
writes the outbox event in the same transaction), and the receiver notes when each
webhook-id arrives:

- latency: 1,000 tasks finished at a steady 100/s; p50/p99 of (receiver got it - event
  committed), both clocks this machine's;
- throughput: 1,000 tasks finished at once; deliveries/s until the last one arrived, and
  the worker's CPU per delivery, against the floor: the same receiver driven by bare
  httpx POSTs from another process, as many at a time as the worker sends to one
  destination (QGW_WEBHOOK_MAX_CONCURRENCY_PER_DESTINATION), on httpx's own transport and
  on the aiohttp one the worker uses, measured in the same run.

    .venv/bin/python bench/webhooks.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from httpx_aiohttp import AiohttpTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database, print_table, redis_url, verdict  # noqa: E402
from service.catalog.generations import LATEST, generation  # noqa: E402
from service.catalog.rules import normalize  # noqa: E402
from service.catalog.schemas import TaskRequest  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402
from service.platform.db import create_pool, migrate  # noqa: E402
from service.tasks.settlement import finish  # noqa: E402
from service.teams.service import new_webhook_secret  # noqa: E402

MAX_JOBS = 200  # QGW_WORKER_MAX_JOBS's default
PER_DESTINATION = 4  # QGW_WEBHOOK_MAX_CONCURRENCY_PER_DESTINATION's default
# httpx's own (httpcore) and the aiohttp one the worker uses (service/webhooks/delivery.py).
TRANSPORTS = ("httpcore", "aiohttp")
REQUEST = normalize(
    TaskRequest(model="minimax-hailuo-2.3", prompt="[推进] a lighthouse at dawn, waves below"),
    generation(LATEST),
).request


class Receiver:
    """bench/receiver_app.py in its own uvicorn process, on a free port."""

    def __init__(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/hook"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench/receiver_app.py"), "--port", str(port)]
        )
        wait_until_healthy(f"{self.base}/count")

    def count(self, at_least: int = 0) -> int:
        """How many have arrived; with `at_least`, once that many have (or after 10 s)."""
        answer = httpx.get(f"{self.base}/count", params={"at_least": at_least}, timeout=15)
        return int(answer.json())

    def arrivals(self) -> dict[str, float]:
        return dict(httpx.get(f"{self.base}/arrivals").json())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def receiver_ceiling(url: str, connections: int, seconds: int = 5) -> float:
    """The receiver's own requests/s under wrk (its own process), a webhook-sized body."""
    script = Path(tempfile.mkdtemp()) / "hook.lua"
    body = '{"x": "' + "y" * 1500 + '"}'
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "-s",
         str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]


async def make_tasks(pool: asyncpg.Pool, team_id: Any, url: str, n: int) -> list[str]:
    ids = [f"task-bench-{secrets.token_hex(8)}" for _ in range(n)]
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO tasks (id, team_id, model, action, request, cost_micros, callback_url,"
            " callback_events) VALUES ($1, $2, 'minimax-hailuo-2.3', 'generate', $4, 1,"
            " $3, ARRAY['completed'])",
            [(task_id, team_id, url, REQUEST) for task_id in ids],
        )
    return ids


async def finish_all(pool: asyncpg.Pool, ids: list[str], per_second: float | None) -> None:
    async def one(task_id: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await finish(conn, task_id, status="completed", from_states=("pending",))

    if per_second is None:
        await asyncio.gather(*(one(t) for t in ids))
        return
    start = time.perf_counter()
    for i, task_id in enumerate(ids):
        await asyncio.sleep(max(0.0, start + i / per_second - time.perf_counter()))
        await one(task_id)


async def wait_for(receiver: Receiver, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await asyncio.to_thread(receiver.count, n)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen} of {n} webhooks arrived")


async def event_times(pool: asyncpg.Pool, ids: list[str]) -> dict[str, float]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, created_at FROM webhook_events WHERE task_id = ANY($1::text[])", ids
        )
    return {r["id"]: r["created_at"].timestamp() for r in rows}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def floor_rate(url: str, n: int, transport: str) -> tuple[float, float]:
    """Plain POSTs of a same-sized body, as many at a time as the worker sends to one
    destination: deliveries/s and CPU ms per POST of this process."""
    body = b"{" + b'"x": "' + b"y" * 1500 + b'"}'
    semaphore = asyncio.Semaphore(PER_DESTINATION)
    limits = httpx.Limits(max_connections=PER_DESTINATION)
    chosen = AiohttpTransport(limits=limits) if transport == "aiohttp" else None
    async with httpx.AsyncClient(limits=limits, transport=chosen) as http:

        async def post(i: int) -> None:
            async with semaphore:
                await http.post(url, content=body, headers={"webhook-id": f"floor-{i}"})

        await post(-1)  # the connection is up before anything is timed
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(post(i) for i in range(n)))
        return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1000


async def floor_in_own_process(url: str, n: int, transport: str) -> tuple[float, float]:
    """The floor sends from its own process, as the worker does (not under our GIL)."""
    out = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--floor", url, "--tasks", str(n), "--transport", transport,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    rate, cpu_ms = (await out.communicate())[0].split()
    return float(rate), float(cpu_ms)


async def run(args: argparse.Namespace, db_url: str, r_url: str) -> None:
    receiver = Receiver()
    # The receiving end first, alone: the worker sends to one destination at most
    # QGW_WEBHOOK_MAX_CONCURRENCY_PER_DESTINATION (4) at a time.
    ceilings = {c: receiver_ceiling(receiver.url, c) for c in (PER_DESTINATION, MAX_JOBS)}
    env = {
        **os.environ,
        "QGW_DATABASE_URL": db_url,
        "QGW_REDIS_URL": r_url,
        "QGW_ARQ_QUEUE_NAME": f"qgw-bench:{secrets.token_hex(3)}",
        "QGW_LOG_LEVEL": "WARNING",
        "QGW_WORKER_HTTP_PORT": "0",
        "QGW_WORKER_MAX_JOBS": str(MAX_JOBS),
        "QGW_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "QGW_QINGBO_BASE_URL": "http://127.0.0.1:9",  # never called: no task is dispatched
        "QGW_UPSTREAM_MAX_IN_FLIGHT": "1",
    }
    pool = await create_pool(db_url, min_size=4, max_size=20)
    worker = subprocess.Popen([sys.executable, "-m", "service", "worker"], env=env, cwd=ROOT)
    try:
        async with pool.acquire() as conn:
            # Nothing may dispatch the bench's tasks: pause submissions for the run.
            await conn.execute("UPDATE upstream_state SET paused_until = now() + interval '1h'")
            team_id = await conn.fetchval(
                "INSERT INTO teams (name, webhook_secret) VALUES ('bench', $1) RETURNING id",
                new_webhook_secret(),
            )
        # One canary delivery: the worker is up and listening before anything is timed.
        await finish_all(pool, await make_tasks(pool, team_id, receiver.url, 1), None)
        await wait_for(receiver, 1)
        n = args.tasks
        paced = await make_tasks(pool, team_id, receiver.url, n)
        await finish_all(pool, paced, per_second=args.rate)
        await wait_for(receiver, n + 1)
        created = await event_times(pool, paced)
        arrived = receiver.arrivals()
        latencies = [(arrived[i] - t) * 1000 for i, t in created.items()]

        burst = await make_tasks(pool, team_id, receiver.url, n)
        before = receiver.count()
        worker_cpu = psutil.Process(worker.pid).cpu_times()
        started = time.time()
        await finish_all(pool, burst, per_second=None)
        await wait_for(receiver, before + n)
        cpu_after = psutil.Process(worker.pid).cpu_times()
        cpu_ms = (sum(cpu_after[:2]) - sum(worker_cpu[:2])) / n * 1000
        burst_events = await event_times(pool, burst)
        arrived = receiver.arrivals()
        last = max(arrived[i] for i in burst_events)
        rate = n / (last - started)
        floors = {t: await floor_in_own_process(receiver.url, n, t) for t in TRANSPORTS}
    finally:
        worker.terminate()
        worker.wait()
        await pool.close()
        receiver.close()

    p99 = percentile(latencies, 99)
    floor = floors["aiohttp"][0]
    floor_rows = []
    for transport, (floor_rate_, floor_cpu) in floors.items():
        what = f"floor: bare httpx POSTs, {PER_DESTINATION} at a time, {transport} transport"
        floor_rows += [
            (f"{what} (/s)", f"{floor_rate_:.0f}", ""),
            ("  CPU per POST (ms)", f"{floor_cpu:.2f}", ""),
        ]
    ceiling = ceilings[PER_DESTINATION]
    paced_at = f"{n} tasks at {args.rate:.0f}/s"
    rows = [
        (f"receiver alone, wrk c={PER_DESTINATION} (req/s)", f"{ceiling:.0f}", ""),
        (f"receiver alone, wrk c={MAX_JOBS} (req/s)", f"{ceilings[MAX_JOBS]:.0f}", ""),
        (f"latency p50, {paced_at} (ms)", f"{percentile(latencies, 50):.1f}", ""),
        (f"latency p99, {paced_at} (ms)", f"{p99:.1f}", f"<= 250 {verdict(p99 <= 250)}"),
        (f"throughput, {n} finished at once (/s)", f"{rate:.0f}", f">= 500 {verdict(rate >= 500)}"),
        ("worker CPU per delivery, the burst (ms)", f"{cpu_ms:.2f}", ""),
        *floor_rows,
        ("throughput against the floor (aiohttp transport)", f"{rate / floor:.2f}x", ""),
        (
            "receiver's ceiling over the worker's rate",
            f"{ceiling / rate:.1f}x",
            f">= 2, not the bottleneck: {verdict(ceiling >= 2 * rate)}",
        ),
    ]
    print_table(
        f"webhooks: one worker process (max_jobs {MAX_JOBS}), receiver in its own process", rows
    )
    print(f"measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="tasks finished per second")
    parser.add_argument("--floor", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--transport", choices=TRANSPORTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        print(*asyncio.run(floor_rate(args.floor, args.tasks, args.transport)))
        return
    _, db_url = database()
    r_url = redis_url()
    migrate(db_url)
    asyncio.run(run(args, db_url, r_url))


if __name__ == "__main__":
    main()
