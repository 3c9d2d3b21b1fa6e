"""Benchmark the rate-limit check alone, at the same concurrency on the same Redis, in the
same run (alternating rounds). Each check is one submission's (two limits: key and team).

--mode clients (the default): the gateway's limiter (one pipelined connection,
service/quotas/pipe.py, the Lua script by EVALSHA) against redis-py's own client and a
multiplexing client, valkey-glide, running the same script.

--mode pipelines (issue 33): the limiter on its hand-made pipe against the same limiter on
redis-py's own non-transactional pipeline fed once per loop turn
(bench/redis_py_pipeline.py, `RateLimiter(connect=RedisPyPipeline)`), and a floor:
redis-benchmark (C, another process) sending the same EVALSHA on one connection, as many
in flight as the concurrency (`-c 1 -P c`), which is what either would do at no client
cost. Its "client CPU" is redis-benchmark's own, read from the children's rusage.

bench/submit.py and bench/cpu.py measure what the check costs a whole submission; this
shows whether another client would win enough to matter: the rule (issue 16) is that
hand-made or extra machinery stays only where the well-kept option costs more than 10 % of
a submission's p50.

    .venv/bin/pip install valkey-glide   # bench-only, for --mode clients
    .venv/bin/python bench/quotas.py [--mode pipelines] [--seconds 5] [--concurrency 16]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import importlib.util
import io
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis as SyncRedis  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.connection import SSLConnection, parse_url  # noqa: E402

from bench.redis_py_pipeline import RedisPyPipeline  # noqa: E402
from bench.stack import redis_url  # noqa: E402
from service.quotas.limiter import CHECK_SCRIPT, WINDOW_MS, Connect, RateLimiter  # noqa: E402
from service.quotas.limits import Limits  # noqa: E402
from service.quotas.pipe import RedisPipe  # noqa: E402

BIG = 10**9  # limits that never refuse: every check runs the whole script
Check = Callable[[int], Awaitable[object]]
GATEWAY = "gateway (pipelined)"
HAND_MADE = "limiter on the hand-made pipe"
REDIS_PY_PIPELINE = "limiter on redis-py's pipeline"
FLOOR = "floor: redis-benchmark -c 1 -P c"
Close = Callable[[], Awaitable[None]]
Result = tuple[float, float, float, float]  # checks/s, p50 ms, p99 ms, client CPU µs/check


async def run_for(
    seconds: float, concurrency: int, check: Check
) -> tuple[float, float, float, float]:
    """checks/s, p50 ms, p99 ms and this process's CPU µs per check (every thread's) of
    `concurrency` loops calling `check` for `seconds`."""
    samples: list[float] = []
    cpu_before = time.process_time()
    deadline = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await check(worker)
            samples.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop(w) for w in range(concurrency)))
    cpu_us = (time.process_time() - cpu_before) * 1e6 / len(samples)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return len(samples) / seconds, statistics.median(samples), p99, cpu_us


async def limiter_on(
    url: str, connect: Connect = RedisPipe
) -> tuple[Callable[[int], Awaitable[object]], Callable[[], Awaitable[None]]]:
    """The gateway's own limiter, on the connection `connect` builds."""
    client = Redis.from_url(url)
    limiter = RateLimiter(
        client,
        prefix=f"bench-quotas:{uuid.uuid4().hex[:8]}",
        on_error="deny",
        connect=connect,
    )
    limits = [Limits(uuid.uuid4(), uuid.uuid4(), BIG, BIG) for _ in range(64)]

    async def check(worker: int) -> object:
        return await limiter.check(limits[worker])

    async def close() -> None:
        await limiter.aclose()
        await client.aclose()

    return check, close


async def gateway_limiter(
    url: str,
) -> tuple[Callable[[int], Awaitable[object]], Callable[[], Awaitable[None]]]:
    return await limiter_on(url, RedisPipe)


async def redis_py_pipeline_limiter(
    url: str,
) -> tuple[Callable[[int], Awaitable[object]], Callable[[], Awaitable[None]]]:
    return await limiter_on(url, RedisPyPipeline)


def redis_benchmark_args(url: str) -> list[str] | None:
    """redis-benchmark's connection options for `url` (as redis-py reads it), or None
    without the binary (the floor is then left out)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    kwargs: dict[str, Any] = dict(parse_url(url))
    tls: list[str] = []
    if issubclass(kwargs.get("connection_class", object), SSLConnection):
        tls = ["--tls"]
        for option, name in (("--cacert", "ssl_ca_certs"), ("--cert", "ssl_certfile"),
                             ("--key", "ssl_keyfile")):  # fmt: skip
            if kwargs.get(name):
                tls += [option, kwargs[name]]
        if kwargs.get("ssl_cert_reqs") == "none":
            tls.append("--insecure")
    if kwargs.get("path"):
        where = ["-s", kwargs["path"]]
    else:
        where = ["-h", kwargs.get("host", "127.0.0.1"), "-p", str(kwargs.get("port", 6379))]
    if kwargs.get("username"):
        where += ["--user", kwargs["username"]]
    if kwargs.get("password"):
        where += ["-a", kwargs["password"]]
    return [binary, *where, *tls, "--dbnum", str(kwargs.get("db", 0))]


def redis_benchmark(base: list[str], concurrency: int, requests: int) -> Result:
    """The same script on the same Redis from redis-benchmark: one connection with
    `concurrency` commands in flight, keys spread like the workers' (64 pairs)."""
    sha = hashlib.sha1(CHECK_SCRIPT.encode(), usedforsecurity=False).hexdigest()
    prefix = f"bench-quotas-floor:{uuid.uuid4().hex[:8]}"
    command = ["EVALSHA", sha, "2", f"{prefix}:key:__rand_int__", f"{prefix}:team:__rand_int__",
               str(WINDOW_MS), str(BIG), str(BIG)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [*base, "-c", "1", "-P", str(concurrency), "-n", str(requests), "-r", "64", "--csv",
         *command],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if not rows:
        raise SystemExit(f"redis-benchmark printed no result: {done.stdout!r} {done.stderr!r}")
    row = rows[-1]
    return (
        float(row["rps"]),
        float(row["p50_latency_ms"]),
        float(row["p99_latency_ms"]),
        cpu * 1e6 / requests,
    )


async def redis_py_client(
    url: str,
) -> tuple[Callable[[int], Awaitable[object]], Callable[[], Awaitable[None]]]:
    """redis-py's own pool, the script by EVALSHA (register_script): the limiter before."""
    redis = Redis.from_url(url, max_connections=32)
    script = redis.register_script(CHECK_SCRIPT)
    prefix = f"bench-quotas-redispy:{uuid.uuid4().hex[:8]}"
    keys = [[f"{prefix}:key:{w}", f"{prefix}:team:{w}"] for w in range(64)]

    async def check(worker: int) -> object:
        return await script(keys[worker], [WINDOW_MS, BIG, BIG])

    return check, redis.aclose


async def glide_client(
    url: str,
) -> tuple[Callable[[int], Awaitable[object]], Callable[[], Awaitable[None]]]:
    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

    parts = urlsplit(url)
    if parts.scheme not in ("redis", ""):
        raise SystemExit("valkey-glide here needs a TCP Redis (redis://host:port)")
    config = GlideClientConfiguration(
        [NodeAddress(parts.hostname or "127.0.0.1", parts.port or 6379)],
        database_id=int(parts.path.lstrip("/") or 0),
    )
    client = await GlideClient.create(config)
    script = Script(CHECK_SCRIPT)
    prefix = f"bench-quotas-glide:{uuid.uuid4().hex[:8]}"
    keys = [[f"{prefix}:key:{w}", f"{prefix}:team:{w}"] for w in range(64)]
    args = [str(WINDOW_MS), str(BIG), str(BIG)]

    async def check(worker: int) -> object:
        return await client.invoke_script(script, keys=keys[worker], args=args)

    async def close() -> None:
        await client.close()

    return check, close


async def floor_for(url: str, args: argparse.Namespace) -> Callable[[], Result] | None:
    """The floor's run, sized to last about `args.seconds` (a short run finds its rate)."""
    base = redis_benchmark_args(url)
    if base is None:
        print("floor left out: redis-benchmark is not installed")
        return None
    with SyncRedis.from_url(url) as plain:  # EVALSHA needs the script there
        plain.script_load(CHECK_SCRIPT)
    probe = max(500, 50 * args.concurrency)
    rate = redis_benchmark(base, args.concurrency, probe)[0]
    requests = max(probe, int(rate * args.seconds))
    return lambda: redis_benchmark(base, args.concurrency, requests)


async def main(args: argparse.Namespace) -> int:
    url = redis_url()
    clients: dict[str, Callable[[str], Awaitable[tuple[Check, Close]]]]
    floor = None
    if args.mode == "pipelines":
        clients = {HAND_MADE: gateway_limiter, REDIS_PY_PIPELINE: redis_py_pipeline_limiter}
        floor = await floor_for(url, args)
    else:
        clients = {
            GATEWAY: gateway_limiter,
            "redis-py": redis_py_client,
            "valkey-glide": glide_client,
        }
        if importlib.util.find_spec("glide") is None:
            # valkey-glide is optional: not in the [bench] extra (a Rust wheel of 10 MB for
            # one comparison).
            print("valkey-glide is not installed (pip install valkey-glide): without it")
            del clients["valkey-glide"]
    names = [*clients, *([FLOOR] if floor else [])]
    results: dict[str, list[Result]] = {n: [] for n in names}
    for _ in range(args.rounds):  # alternate: the machine's drift cancels out of the pair
        for name, make in clients.items():
            check, close = await make(url)
            await run_for(min(0.5, args.seconds), args.concurrency, check)  # warm-up
            results[name].append(await run_for(args.seconds, args.concurrency, check))
            await close()
        if floor is not None:
            results[FLOOR].append(await asyncio.to_thread(floor))
    print(
        f"\nrate-limit check (2 limits), c={args.concurrency}, {args.seconds:g} s runs, "
        f"median of {args.rounds} alternating rounds"
    )
    print("| client | checks/s | p50 ms | p99 ms | client CPU µs/check | checks/s vs floor |")
    print("| --- | --- | --- | --- | --- | --- |")
    median: dict[str, Result] = {}
    for name, runs in results.items():
        rate, p50, p99, cpu = (statistics.median(r[i] for r in runs) for i in range(4))
        median[name] = (rate, p50, p99, cpu)
    for name, (rate, p50, p99, cpu) in median.items():
        ratio = f"{rate / median[FLOOR][0]:.2f}x" if FLOOR in median else "-"
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.1f} | {ratio} |")
    ours = HAND_MADE if args.mode == "pipelines" else GATEWAY
    others = ", ".join(f"{n} {m[3]:.1f}" for n, m in median.items() if n not in (ours, FLOOR))
    print(f"client CPU µs per check: {ours} {median[ours][3]:.1f}, {others}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["clients", "pipelines"], default="clients")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
