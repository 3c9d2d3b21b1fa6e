"""The archive of paid videos on the real stack (issue 17): a worker process copies each
completed task's video from the simulator's link into a real store (the filesystem, and a
real S3 server); the gateway serves the copy after Qingbo's link has expired."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import obstore
import psutil
import pytest

from service.app import create_app
from service.archive.copier import apply_retention
from service.archive.store import open_store
from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from service.simulator.state import mp4_bytes, mp4_chunks
from service.tasks.resources import Resources
from tests.archive.conftest import BUCKET
from tests.conftest import Process, settings_env
from tests.factories import drive_to_end, make_team, submit, wait_for
from tests.test_cli import run_cli
from tests.webhooks.receiver import running_receiver

pytestmark = pytest.mark.usefixtures("api_server")


@dataclass
class Archiving:
    gw: httpx.AsyncClient
    store: Any  # the same store, opened by the test, to look inside
    worker_metrics: str  # the worker's /metrics
    worker: Any  # its process


def db_pool(gw: httpx.AsyncClient) -> Any:
    """The pool of the in-process app behind `gw`."""
    transport = gw._transport
    return transport.app.state.resources.pool  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def archiving_into(
    url: str,
    settings: Settings,
    start_worker: Any,
    worker: dict[str, Any] | None = None,
    app: dict[str, Any] | None = None,
) -> AsyncIterator[Archiving]:
    """A worker process archiving into `url` (with `worker` settings), and an API app in
    this process serving from it (with `app` settings)."""
    ops = free_port()
    options = {
        "archive_retry_base_seconds": 0.1,
        "archive_retry_max_seconds": 0.5,
        "worker_http_port": ops,
        **(worker or {}),
    }
    process = start_worker(archive_url=url, **options)
    api = create_app(settings.model_copy(update={"archive_url": url, **(app or {})}))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as gw:
            yield Archiving(gw, open_store(url), f"http://127.0.0.1:{ops}/metrics", process)


@pytest.fixture(params=["file", "s3"])
async def archiving(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Archiving]:
    """An API app and a worker process archiving into a store of this test's own: a
    directory, or a bucket prefix on a real S3 server (SeaweedFS)."""
    if request.param == "file":
        url = f"file://{tmp_path / 'archive'}"
    else:
        server = request.getfixturevalue("s3_server_fixture")
        for name, value in server.env.items():  # the usual AWS settings, for both processes
            monkeypatch.setenv(name, value)
        url = f"s3://{BUCKET}/{tmp_path.name}"
    async with archiving_into(url, settings, start_worker) as archive:
        yield archive


@pytest.fixture
async def file_archiving(
    settings: Settings, tmp_path: Path, start_worker: Any
) -> AsyncIterator[Archiving]:
    async with archiving_into(f"file://{tmp_path / 'archive'}", settings, start_worker) as kept:
        yield kept


async def archive_of(gw: httpx.AsyncClient, team: Any, task_id: str) -> dict[str, Any]:
    task = (await gw.get(f"/v1/tasks/{task_id}", headers=team.headers)).json()
    return dict(task["archive"])


async def wait_archived(
    gw: httpx.AsyncClient, team: Any, task_id: str, state: str = "stored"
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await archive_of(gw, team, task_id)
        return found if found["state"] == state else None

    return await wait_for(reached, timeout=30)


async def test_the_copy_is_byte_identical_and_served_after_the_link_expired(
    archiving: Archiving, sim: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    gw = archiving.gw
    await sim.put("/_sim/config", json={"result_ttl_seconds": 2})
    team, other = await make_team(gw), await make_team(gw)
    task = await submit(gw, team)
    before = await archive_of(gw, team, task["task_id"])
    assert before == {"state": "off", "videos": []}  # nothing to keep yet
    archive = await wait_archived(gw, team, task["task_id"])
    upstream_id = await db.fetchval(
        "SELECT upstream_task_id FROM tasks WHERE id = $1", task["task_id"]
    )
    expected = mp4_bytes(upstream_id)  # what the simulator served for this task
    (video,) = archive["videos"]
    assert video["bytes"] == len(expected)
    assert video["sha256"] == hashlib.sha256(expected).hexdigest()
    assert video["url"].endswith(f"/v1/tasks/{task['task_id']}/content/0")
    key = f"{team.team['id']}/{task['task_id']}/0.mp4"  # by team and task, nothing secret
    kept = await obstore.get_async(archiving.store, key)
    assert bytes(await kept.bytes_async()) == expected

    source = (await gw.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)).json()
    link = source["result"]["videos"][0]["url"]

    async def link_expired() -> bool:
        return (await sim.get(link.removeprefix(str(sim.base_url).rstrip("/")))).status_code == 404

    await wait_for(link_expired, timeout=10)
    whole = await gw.get(f"/v1/tasks/{task['task_id']}/content", headers=team.headers)
    assert whole.status_code == 200 and whole.content == expected
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(len(expected))
    etag = whole.headers["etag"]
    assert etag == f'"{video["sha256"]}"'
    for path in ("content", "content/0"):  # HEAD: a GET's headers, no bytes
        head = await gw.head(f"/v1/tasks/{task['task_id']}/{path}", headers=team.headers)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(expected))
        assert head.headers["etag"] == etag and head.headers["content-type"] == "video/mp4"
    theirs_head = await gw.head(f"/v1/tasks/{task['task_id']}/content", headers=other.headers)
    assert theirs_head.status_code == 404

    part = await gw.get(
        f"/v1/tasks/{task['task_id']}/content/0", headers={**team.headers, "Range": "bytes=4-11"}
    )
    assert part.status_code == 206 and part.content == expected[4:12] == b"ftypmp42"
    assert part.headers["content-range"] == f"bytes 4-11/{len(expected)}"
    tail = await gw.get(
        f"/v1/tasks/{task['task_id']}/content", headers={**team.headers, "Range": "bytes=-4"}
    )
    assert tail.status_code == 206 and tail.content == expected[-4:]
    past = await gw.get(
        f"/v1/tasks/{task['task_id']}/content",
        headers={**team.headers, "Range": f"bytes={len(expected)}-"},
    )
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(expected)}"
    same = await gw.get(
        f"/v1/tasks/{task['task_id']}/content", headers={**team.headers, "If-None-Match": etag}
    )
    assert same.status_code == 304 and same.content == b""
    theirs = await gw.get(f"/v1/tasks/{task['task_id']}/content", headers=other.headers)
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    missing = await gw.get(f"/v1/tasks/{task['task_id']}/content/3", headers=team.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_archived"


async def test_download_failures_are_retried_until_stored(
    archiving: Archiving, sim: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    gw = archiving.gw
    await sim.put("/_sim/config", json={"download_failures_per_video": 2})
    team = await make_team(gw)
    tasks = [await submit(gw, team) for _ in range(3)]
    for task in tasks:
        await wait_archived(gw, team, task["task_id"])
    attempts = await db.fetch("SELECT attempts FROM video_archives")
    assert [a["attempts"] for a in attempts] == [3, 3, 3]  # two failed, the third stored


async def test_a_link_that_expires_before_the_copy_is_a_failed_archive(
    archiving: Archiving, sim: httpx.AsyncClient
) -> None:
    gw = archiving.gw
    await sim.put("/_sim/config", json={"result_ttl_seconds": 0})  # gone at once
    team = await make_team(gw)
    task = await submit(gw, team)
    archive = await wait_archived(gw, team, task["task_id"], state="failed")
    assert archive["videos"][0]["state"] == "failed"
    gone = await gw.get(f"/v1/tasks/{task['task_id']}/content", headers=team.headers)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "archive_failed"
    # The class of the failure, not the worker's error text (issue 31, point 5).
    assert gone.json()["error"]["message"].endswith("could not be archived (link_error)")
    async with httpx.AsyncClient() as http:  # what QingboVideosLostBeforeArchiving reads
        scrape = (await http.get(archiving.worker_metrics)).text
    assert 'qgw_archive_videos_total{outcome="failed"} 1.0' in scrape


async def test_the_archived_event_goes_to_apps_that_listen_for_it(
    archiving: Archiving, sim: httpx.AsyncClient
) -> None:
    gw = archiving.gw
    team = await make_team(gw)
    with running_receiver() as receiver:
        task = await submit(
            gw, team, callback_url=receiver.url, callback_events=["completed", "archived"]
        )
        plain = await submit(gw, team, callback_url=receiver.url)  # the default events
        await wait_archived(gw, team, task["task_id"])
        await wait_archived(gw, team, plain["task_id"])

        async def heard() -> list[str] | None:
            events = [
                (json.loads(r.body)["task_id"], json.loads(r.body)["event"])
                for r in receiver.received
            ]
            return events if (task["task_id"], "archived") in events else None

        events = await wait_for(heard, timeout=20)
    archived = next(
        json.loads(r.body) for r in receiver.received if json.loads(r.body)["event"] == "archived"
    )
    assert archived["archive"]["state"] == "stored"
    assert archived["archive"]["videos"][0]["sha256"]
    assert (plain["task_id"], "archived") not in events  # not in the default set


async def test_a_worker_killed_mid_copy_leaves_a_whole_copy_after_the_next(
    settings: Settings, tmp_path: Path, start_worker: Any, sim: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    url = f"file://{tmp_path / 'archive'}"
    size = 8 * 1024 * 1024
    await sim.put(
        "/_sim/config", json={"video_bytes": size, "download_bytes_per_second": 2 * 1024 * 1024}
    )
    # The lease outlasts one copy (4 s at the drip rate), as the default (900 s) does.
    lease = {"archive_lease_seconds": 6}
    async with archiving_into(url, settings, start_worker, worker=lease) as kept:
        team = await make_team(kept.gw)
        task = await submit(kept.gw, team)

        async def copying() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM video_archives "
                    "WHERE task_id = $1 AND leased_until > now()",
                    task["task_id"],
                )
            )

        await wait_for(copying, timeout=20)
        early = await kept.gw.get(f"/v1/tasks/{task['task_id']}/content", headers=team.headers)
        assert early.status_code == 404 and early.headers["retry-after"] == "5"
        assert early.json()["error"]["code"] == "not_archived"
        assert (await archive_of(kept.gw, team, task["task_id"]))["state"] == "pending"
        kept.worker.kill()  # SIGKILL four seconds before the copy would have finished
        start_worker(archive_url=url, archive_retry_base_seconds=0.1, **lease)
        await wait_archived(kept.gw, team, task["task_id"])
        whole = await kept.gw.get(f"/v1/tasks/{task['task_id']}/content", headers=team.headers)
    upstream_id = await db.fetchval(
        "SELECT upstream_task_id FROM tasks WHERE id = $1", task["task_id"]
    )
    expected = b"".join(mp4_chunks(upstream_id, size))
    assert whole.status_code == 200 and len(whole.content) == size
    assert whole.content == expected
    attempts = await db.fetchval(
        "SELECT attempts FROM video_archives WHERE task_id = $1", task["task_id"]
    )
    assert attempts == 2


async def test_signed_url_redirects_from_an_s3_store(
    settings: Settings, s3_server_fixture: Any, start_worker: Any, sim: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    s3 = s3_server_fixture
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{BUCKET}/{tmp_path.name}"
    async with archiving_into(url, settings, start_worker, app={"archive_redirect": True}) as kept:
        team = await make_team(kept.gw)
        task = await submit(kept.gw, team)
        await wait_archived(kept.gw, team, task["task_id"])
        answer = await kept.gw.get(f"/v1/tasks/{task['task_id']}/content", headers=team.headers)
    assert answer.status_code == 307
    signed = answer.headers["location"]
    assert signed.startswith(s3.endpoint) and "X-Amz-Signature=" in signed
    async with httpx.AsyncClient() as anyone:  # the store serves whoever holds it, briefly
        fetched = await anyone.get(signed)
    assert fetched.status_code == 200 and fetched.content[4:8] == b"ftyp"


async def test_retention_deletes_old_copies_once(
    file_archiving: Archiving, sim: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    gw = file_archiving.gw
    team = await make_team(gw)
    old, recent = await submit(gw, team), await submit(gw, team)
    for task in (old, recent):
        await wait_archived(gw, team, task["task_id"])
    await db.execute(
        "UPDATE video_archives SET stored_at = now() - interval '10 days' WHERE task_id = $1",
        old["task_id"],
    )
    store = file_archiving.store
    assert await apply_retention(db_pool(gw), store, days=7) == 1
    assert await apply_retention(db_pool(gw), store, days=7) == 0  # safe to run twice
    assert (await archive_of(gw, team, old["task_id"]))["state"] == "expired"
    gone = await gw.get(f"/v1/tasks/{old['task_id']}/content", headers=team.headers)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "archive_expired"
    with pytest.raises(FileNotFoundError):
        await obstore.get_async(store, f"{team.team['id']}/{old['task_id']}/0.mp4")
    kept = await gw.get(f"/v1/tasks/{recent['task_id']}/content", headers=team.headers)
    assert kept.status_code == 200


async def test_backfill_archives_tasks_finished_before_archiving_was_on(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    settings: Settings,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    # Finished by a gateway that does not archive: nothing to keep was recorded.
    assert await drive_to_end(res, db, task["task_id"]) == "completed"
    assert await db.fetchval("SELECT count(*) FROM video_archives") == 0
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    env = {**settings_env(settings)}
    for expected in (1, 0):  # the second run finds nothing new
        ran = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "service", "admin", "archive", "--since", since],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert json.loads(ran.stdout.strip().splitlines()[-1])["queued_videos"] == expected
    # Archiving turned on: the backfilled video is kept.
    async with archiving_into(f"file://{tmp_path / 'archive'}", settings, start_worker) as kept:
        await wait_archived(kept.gw, team, task["task_id"])


async def test_the_cli_downloads_the_kept_copy(
    settings: Settings,
    start_worker: Any,
    sim: httpx.AsyncClient,
    db: asyncpg.Connection,
    tmp_path: Path,
    logs_dir: Path,
) -> None:
    """`generate --download` waits for the archive and saves the gateway's copy (with a
    real API process: the CLI talks HTTP)."""
    url = f"file://{tmp_path / 'archive'}"
    port = free_port()
    own = {"archive_url": url, "public_base_url": f"http://127.0.0.1:{port}"}
    stack = settings.model_copy(update=own)
    api = Process(["api", "--port", str(port)], settings_env(stack), logs_dir / "api-archive.log")
    api.start()
    try:
        gateway = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{gateway}/healthz")
        start_worker(**own, archive_retry_base_seconds=0.1)
        async with httpx.AsyncClient(base_url=gateway) as gw:
            team = await make_team(gw)
        target = tmp_path / "out.mp4"
        done = await asyncio.to_thread(
            run_cli,
            gateway,
            team,
            "generate",
            "--prompt",
            "a paper boat",
            "--download",
            str(target),
        )
    finally:
        api.stop()
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.split()[1]
    upstream_id = await db.fetchval("SELECT upstream_task_id FROM tasks WHERE id = $1", task_id)
    assert target.read_bytes() == mp4_bytes(upstream_id)
    kept = await db.fetchval(
        "SELECT state FROM video_archives WHERE task_id = $1 AND idx = 0", task_id
    )
    assert kept == "stored"


async def test_a_200_mb_video_is_streamed_not_held(
    settings: Settings, tmp_path: Path, start_worker: Any, sim: httpx.AsyncClient,
) -> None:  # fmt: skip
    """The worker's memory stays flat while it copies a 200 MB video: it streams."""
    size = 200 * 1024 * 1024
    async with archiving_into(f"file://{tmp_path / 'archive'}", settings, start_worker) as kept:
        process = psutil.Process(kept.worker.proc.pid)
        team = await make_team(kept.gw)
        # A small video first: what a worker's first copy sets up (the store's runtime,
        # connections) is not what a large one costs.
        warm = await submit(kept.gw, team)
        await wait_archived(kept.gw, team, warm["task_id"])
        await sim.put("/_sim/config", json={"video_bytes": size})
        baseline = peak = process.memory_info().rss
        task = await submit(kept.gw, team)

        async def stored() -> bool:
            nonlocal peak
            peak = max(peak, process.memory_info().rss)
            return (await archive_of(kept.gw, team, task["task_id"]))["state"] == "stored"

        await wait_for(stored, timeout=120, interval=0.02)
    copy = tmp_path / "archive" / str(team.team["id"]) / task["task_id"] / "0.mp4"
    assert copy.stat().st_size == size
    grown = (peak - baseline) / 1024 / 1024
    print(f"worker RSS grew by {grown:.1f} MB while copying 200 MB")
    assert grown < 64, f"the worker grew by {grown:.0f} MB while copying 200 MB"
