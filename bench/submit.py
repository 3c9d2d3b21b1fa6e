"""Benchmark the submit path: POST /v1/tasks on one API process vs. the floor.

The floor is the thinnest FastAPI endpoint doing the same I/O (bench/floor_app.py), run
under the same uvicorn settings and the same load in the same run. Load comes from wrk
(Debian package `wrk`) in its own process. Prints p50/p99 and requests/s of both and the
ratios against the goals: throughput >= 0.7x the floor's, p50 at concurrency 1 <= 2x.

"no-metrics" is a second gateway process with QGW_HTTP_METRICS=false (no per-request
HTTP metrics): the ratio of "gateway" to it is what the metrics cost.

"limits" is the same gateway admitting against three budgets (company, team, key) and two
rate limits (team and key RPM, in Redis); goal: its latency within 1.5x of "gateway"'s
(no budgets, no limits). The company budget is set before each "limits" (and "budgets")
run and removed before every other gateway run ("no-metrics" included: it shares the
database), so they alternate in one process over the same database.
With --breakdown, "budgets" (the three budgets alone) and "rpm" (the two rate limits
alone) show what each half costs.

Runs alternate in rounds; the table shows each setting's median run, and every ratio is
the median over rounds of the ratio within a round (the two sides run a minute apart at
most, so the machine's drift cancels out of the pair).

With --model (and --example), every gateway setting submits that model's valid example
body from tests/catalog/examples/<family>.json instead of the Hailuo one (issue 30: the
heaviest family's validation on the hot path, every guard on); the floor is unchanged.

    .venv/bin/python bench/submit.py [--seconds 10] [--rounds 3] [--breakdown]
                                     [--model seedance-2.5 --example 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import ADMIN_TOKEN, database, redis_url, stack_env  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402
from service.platform.db import migrate  # noqa: E402

# Valid against either upstream generation (2.3-fast is image-to-video only on 2026-09).
BODY = {
    "model": "minimax-hailuo-2.3-fast",
    "prompt": "[推进] a lighthouse at dawn",
    "duration": 6,
    "first_frame_image": "https://img.example/lighthouse.jpg",
}


def example_body(model: str, index: int) -> dict[str, object]:
    """A valid example of `model` from the catalog tests' examples (its family's file)."""
    from service.catalog.engine import shipped_catalog

    entry = shipped_catalog().models.get(model)
    if entry is None:
        raise SystemExit(f"--model: {model} is not in the shipped catalog")
    examples = json.loads((ROOT / f"tests/catalog/examples/{entry.family}.json").read_text())
    valid = examples.get(model, {}).get("valid") or []
    if not 0 <= index < len(valid):
        raise SystemExit(f"--example: {model} has {len(valid)} valid example(s)")
    return {"model": model, **valid[index]}


def set_company_budget(gw: str, admin: dict[str, str], on: bool) -> None:
    budgets = [{"window": "month", "limit_usd": "999999999"}] if on else []
    answer = httpx.put(f"{gw}/admin/budgets", json={"budgets": budgets}, headers=admin)
    answer.raise_for_status()


def limited_key(gw: str, admin: dict[str, str], *, budgets: bool, rpm: bool) -> str:
    """A team and key under a day budget each and/or a (never reached) RPM limit each."""
    limit = {"rpm_limit": 1_000_000} if rpm else {}
    name = f"bench-{'budgets' if budgets else ''}{'rpm' if rpm else ''}"
    team = httpx.post(f"{gw}/admin/teams", json={"name": name, **limit}, headers=admin).json()
    issued = httpx.post(f"{gw}/admin/teams/{team['id']}/keys", json=limit, headers=admin).json()
    day = {"budgets": [{"window": "day", "limit_usd": "999999999"}]}
    for path in (f"/admin/teams/{team['id']}/budgets", f"/admin/keys/{issued['id']}/budgets"):
        if budgets:
            httpx.put(f"{gw}{path}", json=day, headers=admin).raise_for_status()
    return str(issued["key"])


def api_key_writes(db_url: str) -> int:
    """Rows of api_keys updated so far (Postgres's own statistics)."""

    async def read() -> int:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("SELECT pg_stat_force_next_flush()")
            value = await conn.fetchval(
                "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_keys'"
            )
        finally:
            await conn.close()
        return int(value or 0)

    return asyncio.run(read())


def run_wrk(url: str, key: str, connections: int, seconds: int) -> dict[str, float]:
    probe = httpx.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"})
    if probe.status_code != 200:
        raise SystemExit(f"{url} answered {probe.status_code}: {probe.text}")
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{json.dumps(BODY, ensure_ascii=False)}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    threads = min(2, connections)
    base = ["wrk", f"-t{threads}", f"-c{connections}", "-s", str(script), "--latency"]
    subprocess.run([*base, "-d2s", url], capture_output=True, check=True)  # warm-up
    out = subprocess.run([*base, f"-d{seconds}s", url], capture_output=True, text=True, check=True)
    try:
        return parse_wrk(out.stdout)
    except AttributeError:
        raise SystemExit(f"could not read wrk's output:\n{out.stdout}\n{out.stderr}") from None


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(text: str) -> dict[str, float]:
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs per setting; the median is kept"
    )
    parser.add_argument(
        "--concurrency",
        default="1,16",
        help="wrk connections to run at, comma-separated (1 and 16 are always run)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help='also run "budgets" (three budgets, no rate limits) and "rpm" (two rate limits)',
    )
    parser.add_argument("--model", help="submit this model's example body (issue 30)")
    parser.add_argument("--example", type=int, default=0, help="which valid example of --model")
    args = parser.parse_args()
    if args.model:
        BODY.clear()
        BODY.update(example_body(args.model, args.example))
    levels = sorted({1, 16, *(int(c) for c in args.concurrency.split(","))})
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    _, db_url = database()
    r_url = redis_url()
    migrate(db_url)
    env = stack_env(db_url, r_url)
    gw_port, floor_port, bare_port = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "api", "--port", str(gw_port)], env=env, cwd=ROOT
        ),
        subprocess.Popen(
            [sys.executable, "-m", "service", "api", "--port", str(bare_port)],
            env={**env, "QGW_HTTP_METRICS": "false"},
            cwd=ROOT,
        ),
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench/floor_app.py"), "--port", str(floor_port)], env=env
        ),
    ]
    try:
        gw, floor = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{floor_port}"
        bare = f"http://127.0.0.1:{bare_port}"
        wait_until_healthy(f"{gw}/healthz")
        wait_until_healthy(f"{bare}/healthz")
        wait_until_healthy(f"{floor}/docs")
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        team = httpx.post(f"{gw}/admin/teams", json={"name": "bench"}, headers=admin).json()
        issued = httpx.post(f"{gw}/admin/teams/{team['id']}/keys", json={}, headers=admin)
        key = issued.json()["key"]
        keys = {"floor": key, "gateway": key, "no-metrics": key}
        keys["limits"] = limited_key(gw, admin, budgets=True, rpm=True)
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        key_writes_before = api_key_writes(db_url)
        targets = {  # each comparison's two sides run one after the other
            "floor": f"{floor}/floor",
            "gateway": f"{gw}/v1/tasks",
            "limits": f"{gw}/v1/tasks",
            "no-metrics": f"{bare}/v1/tasks",
        }
        if args.breakdown:
            keys["budgets"] = limited_key(gw, admin, budgets=True, rpm=False)
            keys["rpm"] = limited_key(gw, admin, budgets=False, rpm=True)
            targets |= {"budgets": f"{gw}/v1/tasks", "rpm": f"{gw}/v1/tasks"}
        for _ in range(args.rounds):  # alternate, so drift hits every side alike
            for connections in levels:
                for name, url in targets.items():
                    if name != "floor":  # the company budget applies to every gateway run
                        set_company_budget(gw, admin, on=name in ("limits", "budgets"))
                    measured = run_wrk(url, keys[name], connections, args.seconds)
                    runs.setdefault((name, connections), []).append(measured)
                    print(
                        f"  {name:10} c={connections:<3} {measured['rps']:7.0f} req/s  "
                        f"p50 {measured['p50']:6.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
        results = {
            setting: sorted(measured, key=lambda r: r["rps"])[len(measured) // 2]
            for setting, measured in runs.items()
        }
        key_writes = api_key_writes(db_url) - key_writes_before
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()

    print(
        f"\nPOST /v1/tasks vs floor, one uvicorn process each, wrk, {args.seconds}s per run, "
        f"median of {args.rounds} alternating rounds (each run's figures on stderr)"
    )
    print(f"{'server':10} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for (name, conc), r in results.items():
        row = f"{name:10} {conc:>4} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}"
        print(f"{row} {r['errors']:>6.0f}")

    def ratio(a: str, b: str, conc: int, metric: str) -> float:
        """Median over rounds of a/b: each round's runs are minutes apart, not the whole
        benchmark, so drift on the machine cancels out of the pair."""
        pairs = zip(runs[a, conc], runs[b, conc], strict=True)
        return statistics.median(x[metric] / y[metric] for x, y in pairs)

    print("ratios: median over rounds of the ratio within each round")
    for conc in (1, 16):
        print(
            f"c={conc:<3} gateway/floor throughput {ratio('gateway', 'floor', conc, 'rps'):.2f} "
            f"(goal >= 0.70)   p50 {ratio('gateway', 'floor', conc, 'p50'):.2f}   "
            f"p99 {ratio('gateway', 'floor', conc, 'p99'):.2f}"
        )
    print("goals, every guard on (limits: auth, validation, 3 budgets, 2 rate limits, metrics):")
    goals = (  # what, setting, concurrency, metric, at least / at most, bound
        ("throughput at c=16 against the floor's", "limits", 16, "rps", ">=", 0.7),
        ("p99 at c=16 against the floor's", "limits", 16, "p99", "<=", 2.0),
        ("p50 at c=1 against the floor's", "limits", 1, "p50", "<=", 2.0),
        ("no guards: throughput at c=16 against the floor's", "gateway", 16, "rps", ">=", 0.7),
    )
    for what, setting, conc, metric, sense, bound in goals:
        got = ratio(setting, "floor", conc, metric)
        met = got >= bound if sense == ">=" else got <= bound
        print(f"  {what:52} {got:5.2f}x  goal {sense} {bound:.2f}  {'PASS' if met else 'MISS'}")
    for conc in (1, 16):
        print(
            f"metrics cost at c={conc}: throughput with/without "
            f"{ratio('gateway', 'no-metrics', conc, 'rps'):.2f}x, "
            f"p50 {ratio('gateway', 'no-metrics', conc, 'p50'):.2f}x"
        )
    for conc in (1, 16):
        p50 = ratio("limits", "gateway", conc, "p50")
        print(
            f"goal budgets+limits p50 at c={conc} <= 1.5x of without: "
            f"{'PASS' if p50 <= 1.5 else 'MISS'} ({p50:.2f}x; "
            f"p99 {ratio('limits', 'gateway', conc, 'p99'):.2f}x, "
            f"throughput {ratio('limits', 'gateway', conc, 'rps'):.2f}x)"
        )
    requests = sum(r["rps"] * args.seconds for name_runs in runs.values() for r in name_runs)
    print(
        f"api_keys rows written (last_used_at) during about {requests:,.0f} authenticated "
        f"requests: {key_writes} (at most one a minute per key and API process)"
    )
    for part in ("budgets", "rpm"):
        for conc in (1, 16) if (part, 1) in runs else ():
            print(
                f"{part} alone at c={conc}: p50 {ratio(part, 'gateway', conc, 'p50'):.2f}x, "
                f"p99 {ratio(part, 'gateway', conc, 'p99'):.2f}x, "
                f"throughput {ratio(part, 'gateway', conc, 'rps'):.2f}x"
            )


if __name__ == "__main__":
    main()
