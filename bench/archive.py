"""Benchmark the archive's copy: Qingbo's link (the simulator) into a real S3 server
(SeaweedFS on this machine), through the gateway's own copier (service/archive/copier.py:
egress check, streaming, SHA-256, the MP4 check, obstore's multipart upload).

- videos/s: --small videos of 1 MiB each, 8 copies at a time (one worker's share of jobs);
- MB/s: --big videos of 100 MiB each, one at a time.

The floor is the same transfer without the gateway: the whole body read with httpx, then
one obstore put of the bytes, in the same run. Goal: at least 0.7x the floor for both.

    .venv/bin/python bench/archive.py [--small 50] [--big 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import obstore

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import S3_BUCKET, s3_server  # noqa: E402
from service.archive.copier import Archiver  # noqa: E402
from service.archive.store import open_store  # noqa: E402
from service.cli.dev import free_port, wait_until_healthy  # noqa: E402
from service.config import Settings  # noqa: E402
from service.platform.egress import DestinationPolicy  # noqa: E402

GOAL = 0.7
KEY = "bench-key"
MIB = 1024 * 1024


async def make_videos(sim: httpx.AsyncClient, n: int, size: int) -> list[str]:
    await sim.put(
        "/_sim/config", json={"queue_seconds": 0, "processing_seconds": 0, "video_bytes": size}
    )
    urls = []
    for _ in range(n):
        made = await sim.post(
            "/v1/tasks",
            json={"model": "minimax-hailuo-2.3", "prompt": "bench", "duration": 6},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        urls.append(f"{str(sim.base_url).rstrip('/')}/_sim/videos/{made.json()['task_id']}.mp4")
    return urls


async def gateway_copy(archiver: Archiver, urls: list[str], tag: str, parallel: int) -> float:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int, url: str) -> None:
        async with gate:
            await archiver.copy(url, f"bench/{tag}/{i}.mp4")

    started = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
    return time.perf_counter() - started


async def floor_copy(store: Any, urls: list[str], tag: str, parallel: int) -> float:
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(timeout=120) as http:

        async def one(i: int, url: str) -> None:
            async with gate:
                body = (await http.get(url)).content
                await obstore.put_async(store, f"floor/{tag}/{i}.mp4", body)

        started = time.perf_counter()
        await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
        return time.perf_counter() - started


async def run(args: argparse.Namespace, sim_url: str) -> int:
    settings = Settings(archive_url=f"s3://{S3_BUCKET}/bench", webhook_allow_networks="127.0.0.0/8")
    store = open_store(settings.archive_url or "")
    archiver = Archiver(
        settings, store, DestinationPolicy.from_settings(settings.webhook_allow_networks, "")
    )
    missed = 0
    print("\n| what | gateway | floor | x floor | goal |")
    print("| --- | --- | --- | --- | --- |")
    async with httpx.AsyncClient(base_url=sim_url, timeout=60) as sim:
        small = await make_videos(sim, args.small, MIB)
        gw_s = await gateway_copy(archiver, small, "small", 8)
        fl_s = await floor_copy(store, small, "small", 8)
        rate, floor_rate = args.small / gw_s, args.small / fl_s
        verdict = "PASS" if rate >= GOAL * floor_rate else "MISS"
        missed += verdict == "MISS"
        print(
            f"| 1 MiB videos, 8 at a time | {rate:.1f} videos/s | {floor_rate:.1f} videos/s | "
            f"{rate / floor_rate:.2f}x | >= {GOAL}x {verdict} |"
        )
        big = await make_videos(sim, args.big, 100 * MIB)
        gw_b = await gateway_copy(archiver, big, "big", 1)
        fl_b = await floor_copy(store, big, "big", 1)
        mbs, floor_mbs = args.big * 100 / gw_b, args.big * 100 / fl_b
        verdict = "PASS" if mbs >= GOAL * floor_mbs else "MISS"
        missed += verdict == "MISS"
        print(
            f"| 100 MiB videos, one at a time | {mbs:.0f} MiB/s | {floor_mbs:.0f} MiB/s | "
            f"{mbs / floor_mbs:.2f}x | >= {GOAL}x {verdict} |"
        )
    await archiver.aclose()
    return 1 if missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--big", type=int, default=3)
    args = parser.parse_args()
    with s3_server() as server:
        os.environ.update(server.env)
        port = free_port()
        sim = subprocess.Popen(
            [sys.executable, "-m", "service", "simulator", "--port", str(port),
             "--api-key", KEY],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(f"{url}/_sim/config")
            print(f"S3: SeaweedFS at {server.endpoint}; Qingbo: the simulator at {url}")
            code = asyncio.run(run(args, url))
        finally:
            sim.terminate()
            sim.wait(timeout=20)
    sys.exit(code)


if __name__ == "__main__":
    main()
