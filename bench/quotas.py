"""Benchmark the rate-limit check alone: the gateway's limiter (one pipelined connection,
service/quotas/pipe.py, the Lua script by EVALSHA) against redis-py's own client and a
multiplexing client, valkey-glide, running the same script, at the same concurrency on the
same Redis, in the same run. Each check is one submission's (two limits: key and team).

bench/submit.py measures what the check costs a whole submission; this shows whether
another client would win enough to matter: the rule (issue 16) is that hand-made or
extra machinery stays only where the well-kept option costs more than 10 % of a
submission's p50.

    .venv/bin/pip install valkey-glide   # bench-only
    .venv/bin/python bench/quotas.py [--seconds 5] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from bench.stack import redis_url  # noqa: E402
from service.quotas.limiter import CHECK_SCRIPT, WINDOW_MS, RateLimiter  # noqa: E402
from service.quotas.limits import Limits  # noqa: E402

BIG = 10**9  # limits that never refuse: every check runs the whole script
Check = Callable[[int], Awaitable[object]]
GATEWAY = "gateway (pipelined)"
Close = Callable[[], Awaitable[None]]


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


async def gateway_limiter(
    url: str,
) -> tuple[Callable[[int], Awaitable[object]], Callable[[], Awaitable[None]]]:
    redis = Redis.from_url(url)
    limiter = RateLimiter(redis, prefix=f"bench-quotas:{uuid.uuid4().hex[:8]}", on_error="deny")
    limits = [Limits(uuid.uuid4(), uuid.uuid4(), BIG, BIG) for _ in range(64)]

    async def check(worker: int) -> object:
        return await limiter.check(limits[worker])

    async def close() -> None:
        await limiter.aclose()
        await redis.aclose()

    return check, close


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


async def main(args: argparse.Namespace) -> int:
    url = redis_url()
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
    results: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in clients}
    for _ in range(args.rounds):  # alternate: the machine's drift cancels out of the pair
        for name, make in clients.items():
            check, close = await make(url)
            await run_for(0.5, args.concurrency, check)  # warm-up: connections, script
            results[name].append(await run_for(args.seconds, args.concurrency, check))
            await close()
    print(
        f"\nrate-limit check (2 limits), c={args.concurrency}, {args.seconds:g} s runs, "
        f"median of {args.rounds} alternating rounds"
    )
    print("| client | checks/s | p50 ms | p99 ms | client CPU µs/check |")
    print("| --- | --- | --- | --- | --- |")
    cpu: dict[str, float] = {}
    for name, runs in results.items():
        rate, p50, p99, cpu[name] = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {cpu[name]:.1f} |")
    others = ", ".join(f"{n} {c:.1f}" for n, c in cpu.items() if n != GATEWAY)
    print(f"client CPU µs per check: the gateway's {cpu[GATEWAY]:.1f}, {others}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
