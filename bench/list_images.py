"""Benchmark reads and lists over tasks that carry large Base64 images (issue 15, point 9).

A team holds 100 image-to-video tasks whose image is a Base64 PNG of --image-mib MiB
(random bytes, so Postgres cannot compress them away); another team holds 100 of the same
tasks with an image URL. Each is read through the gateway's own code: the list query of
`GET /v1/tasks?limit=100` and the rendering of every row, and one `GET /v1/tasks/{id}`.
The floor is the same call over the small tasks, in the same run. Goal: the big ones cost
at most 1.5x the small ones (the images are never decoded or shipped to be summarised).

    .venv/bin/python bench/list_images.py [--image-mib 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database, drop_database, timed  # noqa: E402
from service.platform.db import create_pool, migrate  # noqa: E402
from service.tasks import repository  # noqa: E402
from service.tasks.media import split_media  # noqa: E402
from service.tasks.render import render_task  # noqa: E402

GOAL = 1.5
TASKS = 100
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def request_with(image: str) -> dict[str, Any]:
    return {
        "model": "minimax-hailuo-2.3",
        "action": "image2video",
        "prompt": "a lighthouse at dawn",
        "resolution": "768p",
        "duration": 6,
        "image_urls": [image],
        "watermark": False,
        "prompt_optimizer": True,
        "fast_pretreatment": False,
        "metadata": {},
    }


async def fill(
    conn: asyncpg.Connection, team: Any, request: dict[str, Any], tag: str, *, inline: bool
) -> None:
    """`inline`: the images stored in the task's request, as before task_media."""
    stored, media = (request, None) if inline else split_media(request)
    for i in range(TASKS):
        task_id = f"task-bench-{tag}-{i}"
        await conn.execute(
            "INSERT INTO tasks (id, team_id, model, action, request, cost_micros, callback_events) "
            "VALUES ($1, $2, 'minimax-hailuo-2.3', 'image2video', $3, 300000, '{}')",
            task_id,
            team,
            stored,
        )
        if media is not None:
            await repository.store_media(conn, task_id, media)


async def measure(base: str, url: str, image_mib: float, runs: int) -> int:
    pool = await create_pool(url, min_size=1, max_size=2)
    raw = PNG + os.urandom(int(image_mib * 1024 * 1024) - len(PNG))
    big = base64.b64encode(raw).decode()
    async with pool.acquire() as conn:
        teams = [
            await conn.fetchval(
                "INSERT INTO teams (name, webhook_secret) VALUES ($1, 'whsec_b') RETURNING id",
                name,
            )
            for name in ("bench-small", "bench-big", "bench-inline")
        ]
        small_team, big_team, inline_team = teams
        started = time.perf_counter()
        small = request_with("https://img.example/frame.png")
        await fill(conn, small_team, small, "small", inline=False)
        await fill(conn, big_team, request_with(big), "big", inline=False)
        await fill(conn, inline_team, request_with(big), "inline", inline=True)
        print(
            f"filled {TASKS} tasks with an image URL and twice {TASKS} with a {image_mib:g} MiB "
            f"Base64 image (beside the task; inline, as before) in "
            f"{time.perf_counter() - started:.1f} s"
        )
    print(
        "\n| call | small images ms | big images ms | x small | goal | big, inline (before) ms "
        "| x small |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    missed = 0
    async with pool.acquire() as conn:

        async def listing(team: Any) -> Any:
            rows = await repository.list_tasks(
                conn, team_id=team, status=None, model=None, limit=100, before=None
            )
            return [render_task(r) for r in rows]

        async def read(tag: str) -> Any:
            row = await repository.get_task(conn, f"task-bench-{tag}-7")
            return render_task(row)

        calls = (
            ("GET /v1/tasks?limit=100", listing, (small_team, big_team, inline_team)),
            ("GET /v1/tasks/{id}", read, ("small", "big", "inline")),
        )
        for call, run, (small_arg, big_arg, inline_arg) in calls:
            small_ms = await timed(runs, lambda run=run, a=small_arg: run(a))
            big_ms = await timed(runs, lambda run=run, a=big_arg: run(a))
            inline_ms = await timed(runs, lambda run=run, a=inline_arg: run(a))
            ratio = big_ms / max(small_ms, 0.001)
            verdict = "PASS" if ratio <= GOAL else "MISS"
            missed += verdict == "MISS"
            print(
                f"| {call} | {small_ms:.2f} | {big_ms:.2f} | {ratio:.2f}x | <= {GOAL}x {verdict} "
                f"| {inline_ms:.2f} | {inline_ms / max(small_ms, 0.001):.0f}x |"
            )
        shown = (await listing(big_team))[0]["image_urls"]
        print(f"\nthe list shows each big image as: {shown}")
    await pool.close()
    await drop_database(base, url)
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-mib", type=float, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base, url = database()
    migrate(url)
    sys.exit(asyncio.run(measure(base, url, args.image_mib, args.runs)))
