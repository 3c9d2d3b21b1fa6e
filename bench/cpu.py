"""Where the CPU of a submission goes: CPU milliseconds per request of each process (the
API, the floor app, Postgres, Redis) under wrk at c=16, for the floor, the gateway with
no guards and the gateway with every guard on ("limits": 3 budgets, 2 rate limits).

The machine has two cores for everything, so a process near one core's worth of CPU per
request-second is the ceiling: the API's ms/request sets the gateway's throughput. With
--py-spy, the API process is sampled during the "limits" run, or the one --py-spy-run
names (raw collapsed stacks to --py-spy's path; py-spy is a bench-only install).

    .venv/bin/python bench/cpu.py [--seconds 8] [--py-spy /tmp/api.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import (  # noqa: E402
    ADMIN_TOKEN,
    database,
    drop_database,
    print_table,
    redis_url,
    stack_env,
)
from bench.submit import limited_key, run_wrk, set_company_budget  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402
from service.platform.db import migrate  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def cpu_by_process(api: int, floor: int) -> dict[str, float]:
    seconds = {"api": 0.0, "floor": 0.0, "postgres": 0.0, "redis": 0.0}
    for proc in psutil.process_iter(["name"]):
        try:
            times = proc.cpu_times()
            name = proc.info["name"] or ""
            role = {api: "api", floor: "floor"}.get(proc.pid)
            role = role or (
                "postgres" if "postgres" in name else "redis" if "redis" in name else None
            )
            if role:
                seconds[role] += times.user + times.system
        except psutil.Error:
            continue  # a process that ended meanwhile
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--py-spy", metavar="PATH")
    parser.add_argument(
        "--py-spy-run", choices=["gateway", "limits"], default="limits", help="which run"
    )
    args = parser.parse_args()
    base, db_url = database()
    migrate(db_url)
    env = stack_env(db_url, redis_url())
    port, floor_port = free_port(), free_port()
    api = subprocess.Popen([sys.executable, "-m", "service", "api", "--port", str(port)], env=env)
    floor = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/floor_app.py"), "--port", str(floor_port)], env=env
    )
    rows = []
    try:
        gw = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{gw}/healthz")
        wait_until_healthy(f"http://127.0.0.1:{floor_port}/docs")
        team = httpx.post(f"{gw}/admin/teams", json={"name": "plain"}, headers=ADMIN).json()
        plain = httpx.post(f"{gw}/admin/teams/{team['id']}/keys", json={}, headers=ADMIN)
        keys = {"floor": plain.json()["key"], "gateway": plain.json()["key"]}
        keys["limits"] = limited_key(gw, ADMIN, budgets=True, rpm=True)
        urls = {"floor": f"http://127.0.0.1:{floor_port}/floor"}
        for name in ("floor", "gateway", "limits"):
            set_company_budget(gw, ADMIN, on=name == "limits")
            spy = None
            if args.py_spy and name == args.py_spy_run:
                spy = subprocess.Popen(
                    ["py-spy", "record", "-p", str(api.pid), "-d", str(args.seconds + 2),
                     "-r", "200", "-f", "raw", "-o", args.py_spy, "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
            before, started = cpu_by_process(api.pid, floor.pid), time.monotonic()
            measured = run_wrk(urls.get(name, f"{gw}/v1/tasks"), keys[name], 16, args.seconds)
            after, wall = cpu_by_process(api.pid, floor.pid), time.monotonic() - started
            requests = measured["rps"] * wall  # wrk's warm-up included, at the same rate
            per = {k: 1000 * (after[k] - before[k]) / requests for k in before}
            server = per["floor"] if name == "floor" else per["api"]
            rows.append((f"{name}: req/s, c=16", f"{measured['rps']:.0f}", ""))
            rows.append((f"{name}: its Python process, CPU ms/request", f"{server:.3f}", ""))
            rows.append((f"{name}: Postgres, CPU ms/request", f"{per['postgres']:.3f}", ""))
            rows.append((f"{name}: Redis, CPU ms/request", f"{per['redis']:.3f}", ""))
            if spy is not None:
                spy.wait()
    finally:
        for proc in (api, floor):
            proc.terminate()
            proc.wait()
        asyncio.run(drop_database(base, db_url))
    print_table("CPU per request, by process (wrk c=16)", rows)


if __name__ == "__main__":
    main()
