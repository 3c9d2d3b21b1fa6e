"""Archive downloads are capped (issue 31, point 9): a video bigger than
QGW_ARCHIVE_MAX_BYTES, a link that declares more, or one that never ends is cut off,
its archive entry failed at once with a generic reason and counted; the team sees the
reason's class, never the worker's error text or an address."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import obstore
import pytest

from service.config import Settings
from tests.archive.conftest import BUCKET
from tests.archive.test_archive import Archiving, archiving_into, wait_archived
from tests.conftest import UPSTREAM_VERSION
from tests.factories import make_team, submit, wait_for

pytestmark = pytest.mark.usefixtures("api_server")

CAP = 6 * 1024 * 1024
# An ISO base media file's first box (what the archive checks a video by).
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@dataclass
class EndlessLink:
    """A real HTTP server on loopback serving an MP4 that never ends, in chunks or behind
    a Content-Length far beyond the cap; it counts what it sent and sees the hang-up."""

    declare: int | None
    sent: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        framing = (
            b"Transfer-Encoding: chunked"
            if self.declare is None
            else b"Content-Length: %d" % self.declare
        )
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n" + framing + b"\r\n\r\n")
        piece = FTYP + b"\x00" * (64 * 1024 - len(FTYP))
        try:
            while True:
                if self.declare is None:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    writer.write(piece)
                await writer.drain()
                self.sent += len(piece)
                piece = b"\x00" * len(piece)
        except (ConnectionError, OSError):
            self.hung_up.set()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def endless_link(declare: int | None) -> AsyncIterator[EndlessLink]:
    link = EndlessLink(declare)
    server = await asyncio.start_server(link.serve, "127.0.0.1", 0)
    link.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/video.mp4"
    async with server:
        yield link
        server.close()


@contextlib.asynccontextmanager
async def capped(
    settings: Settings, tmp_path: Path, start_worker: Any, url: str | None = None
) -> AsyncIterator[Archiving]:
    url = url or f"file://{tmp_path / 'archive'}"
    async with archiving_into(
        url, settings, start_worker, worker={"archive_max_bytes": CAP}
    ) as kept:
        yield kept


async def failed_as_too_large(
    kept: Archiving, team: Any, task_id: str, db: asyncpg.Connection
) -> None:
    archive = await wait_archived(kept.gw, team, task_id, state="failed")
    assert archive["videos"][0]["state"] == "failed"
    assert archive["videos"][0]["error"] == "too_large"  # the class, as the team sees it
    row = await db.fetchrow(
        "SELECT attempts, last_error FROM video_archives WHERE task_id = $1", task_id
    )
    assert row["attempts"] == 1  # not retried: it would be as big again
    assert row["last_error"].startswith("too_large:")
    gone = await kept.gw.get(f"/v1/tasks/{task_id}/content", headers=team.headers)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "archive_failed"
    message = gone.json()["error"]["message"]
    assert "(too_large)" in message, message
    for internal in ("127.0.0.1", "http", "bytes", str(CAP)):
        assert internal not in message, message
    async with httpx.AsyncClient() as http:
        scrape = (await http.get(kept.worker_metrics)).text
    assert "qgw_archive_too_large_total 1.0" in scrape
    assert 'qgw_archive_videos_total{outcome="failed"} 1.0' in scrape


async def test_a_video_bigger_than_the_cap_is_not_archived(
    settings: Settings, tmp_path: Path, start_worker: Any, sim: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    """Qingbo's link declares (truthfully) more than QGW_ARCHIVE_MAX_BYTES."""
    await sim.put("/_sim/config", json={"video_bytes": CAP + 1024 * 1024})
    async with capped(settings, tmp_path, start_worker) as kept:
        team = await make_team(kept.gw)
        task = await submit(kept.gw, team)
        await failed_as_too_large(kept, team, task["task_id"], db)
    assert not list((tmp_path / "archive").rglob("*.mp4"))


@pytest.mark.parametrize(
    ("declare", "store"),
    [(None, "file"), (None, "s3"), (50 * 1024**3, "file")],
    ids=["chunked", "chunked-s3", "declared-50GiB"],
)
async def test_an_endless_link_is_cut_off_at_the_cap(
    settings: Settings, tmp_path: Path, start_worker: Any, sim: httpx.AsyncClient,
    db: asyncpg.Connection, declare: int | None, store: str, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    url = None
    if store == "s3":  # a real S3 server: the multipart upload under way is abandoned
        server = request.getfixturevalue("s3_server_fixture")
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        url = f"s3://{BUCKET}/{tmp_path.name}"
    async with (
        endless_link(declare) as link,
        capped(settings, tmp_path, start_worker, url) as kept,
    ):
        url: Any = [link.url] if UPSTREAM_VERSION != "2026-04" else link.url
        videos = [{"url": url, "expires_at": int(time.time()) + 3600}]
        patched = await sim.put(
            "/_sim/config", json={"terminal_patch": {"result": {"videos": videos}}}
        )
        assert patched.status_code == 200, patched.text
        team = await make_team(kept.gw)
        task = await submit(kept.gw, team)
        await failed_as_too_large(kept, team, task["task_id"], db)

        async def hung_up() -> bool:
            return link.hung_up.is_set()

        await wait_for(hung_up, timeout=10)
        assert obstore.list(kept.store).collect() == []  # nothing kept, whole or in part
    # Cut off at the cap (plus what sockets buffer), not read on for ever.
    assert link.sent < CAP + 16 * 1024 * 1024, link.sent
    assert not list((tmp_path / "archive").rglob("*.mp4"))
