"""Small factories over the real admin API, and waiting on conditions with a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
from arq.constants import health_check_key_suffix
from prometheus_client import REGISTRY

from service.tasks import dispatch, submission, tracking
from service.tasks.resources import Resources
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T = TypeVar("T")


@dataclass
class TeamKey:
    team: dict[str, Any]
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_team(client: httpx.AsyncClient, **overrides: Any) -> TeamKey:
    body = {"name": f"team-{secrets.token_hex(4)}", **overrides}
    team = await client.post("/admin/teams", json=body, headers=ADMIN)
    assert team.status_code == 201, team.text
    key = await client.post(f"/admin/teams/{team.json()['id']}/keys", json={}, headers=ADMIN)
    assert key.status_code == 201, key.text
    return TeamKey(team=team.json(), key=key.json()["key"])


FIRST_FRAME = "https://img.example/first-frame.png"
_IMAGE_FIELDS = ("image_urls", "first_frame_image", "last_frame_image")


def task_body(**overrides: Any) -> dict[str, Any]:
    """A body valid against both upstream generations: 2.3-fast is image-to-video only on
    2026-09, so it gets a reference image unless the test gives images itself."""
    body = {
        "model": "minimax-hailuo-2.3",
        "prompt": f"a fox in the snow {secrets.token_hex(3)}",
        **overrides,
    }
    if body["model"] == "minimax-hailuo-2.3-fast" and not any(f in body for f in _IMAGE_FIELDS):
        body["image_urls"] = [FIRST_FRAME]
    return body


async def submit(client: httpx.AsyncClient, team: TeamKey, **overrides: Any) -> dict[str, Any]:
    answer = await client.post("/v1/tasks", json=task_body(**overrides), headers=team.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def until(condition: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """wait_for for a plain condition (state of this process, no I/O to await)."""

    async def holds() -> bool:
        return condition()

    await wait_for(holds, timeout=timeout)


def wait_until(probe: Callable[[], object], *, timeout: float = 30.0) -> None:
    """Synchronous twin of wait_for, for code outside the event loop."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)  # poll until the deadline


async def task_status(client: httpx.AsyncClient, team: TeamKey, task_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/tasks/{task_id}", headers=team.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def wait_terminal(
    client: httpx.AsyncClient, team: TeamKey, task_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task = await task_status(client, team, task_id)
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    return await wait_for(probe, timeout=timeout)


async def claim(res: Resources, db: asyncpg.Connection, task_id: str) -> int:
    """Dispatch until this task is claimed; its attempt number."""

    async def claimed() -> int | None:
        await dispatch.dispatch_pending(res)
        row = await db.fetchrow(
            "SELECT dispatch_state, dispatch_attempts FROM tasks WHERE id = $1", task_id
        )
        return row["dispatch_attempts"] if row["dispatch_state"] == "claimed" else None

    return await wait_for(claimed, timeout=5)


async def drive_to_end(res: Resources, db: asyncpg.Connection, task_id: str) -> str:
    """Run one task through the worker's own job code (no worker process): its final status."""
    await submission.submit(res, task_id, await claim(res, db, task_id))

    async def refreshed() -> str | None:
        await tracking.refresh_from_upstream(res.pool, res.qingbo, res.settings, task_id)
        row = await db.fetchrow("SELECT status, dispatch_state FROM tasks WHERE id = $1", task_id)
        return row["status"] if row["dispatch_state"] == "done" else None

    return await wait_for(refreshed, timeout=15)


async def drop_queued_jobs(redis: Any, queue: str) -> None:
    """What a flushed Redis loses of this test run's: the jobs queued under `queue` and
    every key named after it (rate-limit logs, worker health). Other runs and processes
    sharing the Redis database keep theirs: nothing else is deleted."""
    job_ids = await redis.zrange(queue, 0, -1)
    keys = [f"arq:job:{j.decode() if isinstance(j, bytes) else j}" for j in job_ids]
    keys += [k async for k in redis.scan_iter(match=f"{queue}*", count=1000)]
    if keys:
        await redis.delete(*keys)


def variant(res: Resources, **settings: Any) -> Resources:
    return dataclasses.replace(res, settings=res.settings.model_copy(update=settings))


async def row(db: asyncpg.Connection, task_id: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)


async def sim_tasks(sim: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await sim.get("/_sim/tasks")).json()["tasks"])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Ran:
    """What a CLI command did: its exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


async def invoke_cli(args: list[str], env: dict[str, str]) -> Ran:
    """`qingbo-gateway ARGS` in this process, in a thread (the commands block, or run their
    own event loop), with `env` set and the settings read again from it."""
    from click.testing import CliRunner

    from service.cli.main import cli
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    finally:
        get_settings.cache_clear()
    return Ran(result.exit_code, result.stdout, result.stderr)


async def start_ready_worker(
    res: Resources, start_worker: Callable[..., Any], **overrides: Any
) -> Any:
    """A worker process that has started taking jobs (arq writes its health key on its first
    turn): for tests whose waits are short (QGW_SYNC_MAX_WAIT_SECONDS is 3 s in the suite),
    where a worker still importing on a loaded machine would be taken for a slow one."""
    key = res.settings.arq_queue_name + health_check_key_suffix
    await res.redis.delete(key)  # a worker of an earlier test left one with an hour to live
    worker = start_worker(**overrides)

    async def taking_jobs() -> bool:
        return bool(await res.redis.exists(key))

    await wait_for(taking_jobs, timeout=60)
    return worker
