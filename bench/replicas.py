"""Benchmark two API processes and two workers on one Postgres and one Redis.

- budgets race: --race submissions at once, alternating between the two API processes,
  against a team budget that holds exactly --fits of them: exactly that many admitted,
  and the reserved money equals the budget to the micro-dollar;
- fairness: a busy team queues 300 tasks before a quiet team queues 10, then two worker
  processes dispatch them under an in-flight cap of 20: the quiet team's tasks must be
  among the first 40 sent to Qingbo (each team's fair share of two claims' worth);
- throughput: wrk at c=16 against one API process, then two wrk at c=8 each against two
  API processes at once (the same total concurrency), alternating over --rounds: on two
  cores, two processes must give at least 0.9x the requests/s of one (nothing serialises
  across processes: no lock, no shared row, no single Redis key on the hot path).

    .venv/bin/python bench/replicas.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import ADMIN_TOKEN, in_own_database, print_table, stack_env, verdict  # noqa: E402
from bench.submit import BODY, run_wrk  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def new_key(gw: str, name: str, **team: Any) -> tuple[str, str]:
    made = httpx.post(f"{gw}/admin/teams", json={"name": name, **team}, headers=ADMIN).json()
    issued = httpx.post(f"{gw}/admin/teams/{made['id']}/keys", json={}, headers=ADMIN).json()
    return str(made["id"]), str(issued["key"])


async def budgets_race(apis: list[str], db: asyncpg.Connection, fits: int, race: int) -> Any:
    team_id, key = new_key(apis[0], f"race-{secrets.token_hex(3)}")
    headers = {"Authorization": f"Bearer {key}"}
    estimate = httpx.post(f"{apis[0]}/v1/tasks/estimate", json=BODY, headers=headers).json()
    cost_micros = int(Decimal(estimate["cost_usd"]) * 1_000_000)
    limit_usd = str(Decimal(cost_micros * fits) / 1_000_000)
    budgets = {"budgets": [{"window": "day", "limit_usd": limit_usd}]}
    path = f"{apis[0]}/admin/teams/{team_id}/budgets"
    httpx.put(path, json=budgets, headers=ADMIN).raise_for_status()
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        answers = await asyncio.gather(
            *(http.post(f"{apis[i % 2]}/v1/tasks", json=BODY) for i in range(race))
        )
    codes = [a.status_code for a in answers]
    reserved = await db.fetchval(
        "SELECT coalesce(sum(cost_micros), 0) FROM tasks WHERE team_id = $1::uuid", team_id
    )
    return codes.count(200), codes.count(402), len(codes), int(reserved), cost_micros * fits


async def fairness(db: asyncpg.Connection, gw: str, start_workers: Any) -> tuple[int, int]:
    _, busy = new_key(gw, "busy")
    _, quiet = new_key(gw, "quiet")
    async with httpx.AsyncClient(timeout=60) as http:
        for key, n in ((busy, 300), (quiet, 10)):
            for _ in range(n):
                answer = await http.post(
                    f"{gw}/v1/tasks", json=BODY, headers={"Authorization": f"Bearer {key}"}
                )
                answer.raise_for_status()
    start_workers()
    deadline = asyncio.get_running_loop().time() + 120
    query = (
        "SELECT t.name FROM tasks k JOIN teams t ON t.id = k.team_id "
        "WHERE k.submitted_at IS NOT NULL AND t.name IN ('busy', 'quiet') "
        "ORDER BY k.submitted_at, k.id"
    )
    while True:
        order = [r["name"] for r in await db.fetch(query)]
        if order.count("quiet") == 10:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit(f"the quiet team's tasks were not all sent: {order.count('quiet')}")
        await asyncio.sleep(0.2)  # polling the database until the deadline
    last_quiet = max(i for i, name in enumerate(order) if name == "quiet") + 1
    return last_quiet, len(order)


def throughput(apis: list[str], key: str, seconds: int, rounds: int) -> tuple[list, list]:
    one, two = [], []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(rounds):
            one.append(run_wrk(f"{apis[0]}/v1/tasks", key, 16, seconds)["rps"])
            both = pool.map(lambda api: run_wrk(f"{api}/v1/tasks", key, 8, seconds), apis)
            two.append(sum(r["rps"] for r in both))
    return one, two


async def run(args: argparse.Namespace, db_url: str, r_url: str) -> list[tuple[str, str, str]]:
    sim_port, ports = free_port(), [free_port(), free_port()]
    apis = [f"http://127.0.0.1:{p}" for p in ports]
    env = stack_env(
        db_url,
        r_url,
        qingbo_base_url=f"http://127.0.0.1:{sim_port}",
        qingbo_api_key="sim-key",
        sim_api_key="sim-key",
        upstream_max_in_flight="20",
        upstream_max_submits_per_second="1000",
        worker_http_port="0",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "simulator", "--port", str(sim_port)], env=env
        ),
        *(
            subprocess.Popen([sys.executable, "-m", "service", "api", "--port", str(p)], env=env)
            for p in ports
        ),
    ]

    def start_workers() -> None:
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "service", "worker"], env=env))

    db = await asyncpg.connect(db_url)
    try:
        for api in apis:
            wait_until_healthy(f"{api}/healthz")
        sim = f"http://127.0.0.1:{sim_port}/_sim/config"
        wait_until_healthy(sim)
        httpx.put(sim, json={"queue_seconds": 0, "processing_seconds": 1}).raise_for_status()
        admitted, refused, sent, reserved, limit = await budgets_race(
            apis, db, args.fits, args.race
        )
        last_quiet, dispatched = await fairness(db, apis[0], start_workers)
        # The workers would dispatch the throughput runs' tasks meanwhile: stop them first.
        for worker in procs[3:]:
            worker.terminate()
            worker.wait()
        _, key = new_key(apis[0], "throughput")
        one, two = throughput(apis, key, args.seconds, args.rounds)
    finally:
        await db.close()
        for proc in procs:
            proc.terminate()
            proc.wait()
    ratio = statistics.median(b / a for a, b in zip(one, two, strict=True))
    race_ok = admitted == args.fits and reserved == limit and admitted + refused == sent
    return [
        (f"budgets race: {sent} at once over 2 APIs, budget fits", f"{args.fits}", ""),
        ("budgets race: admitted / refused 402", f"{admitted} / {refused}", ""),
        ("budgets race: reserved = budget (micro-dollars)", f"{reserved}", verdict(race_ok)),
        ("fairness: quiet team's 10th task sent as", f"#{last_quiet}", verdict(last_quiet <= 40)),
        ("fairness: tasks sent by two workers by then", f"{dispatched}", ""),
        ("one API process, c=16 (req/s, median)", f"{statistics.median(one):.0f}", ""),
        ("two API processes, c=8 each (req/s, median)", f"{statistics.median(two):.0f}", ""),
        ("two against one, median of rounds", f"{ratio:.2f}x", f">= 0.90 {verdict(ratio >= 0.9)}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fits", type=int, default=37)
    parser.add_argument("--race", type=int, default=200)
    args = parser.parse_args()
    rows = in_own_database(lambda db_url, r_url: run(args, db_url, r_url))
    print_table("two API processes and two workers, one Postgres, one Redis", rows)


if __name__ == "__main__":
    main()
