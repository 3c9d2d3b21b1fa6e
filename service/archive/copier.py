"""Copying one result video from Qingbo's link into the object store, streamed: it is
hashed and checked (MP4, by its bytes) as it passes, never held whole in memory.

A failed copy is tried again with backoff until shortly before the link expires; then it
is `failed`, counted and alerted on. Downloads go through the webhooks' egress policy, so
a forged result URL cannot make a worker read an internal address.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import obstore

from service.archive import repository
from service.config import Settings
from service.platform.egress import BlockedDestination, DestinationPolicy, UnresolvedHost
from service.platform.metrics import (
    ARCHIVE_BYTES,
    ARCHIVE_TOO_LARGE,
    ARCHIVE_VIDEOS,
    ARCHIVE_WAIT,
)

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
PART_BYTES = 5 * 1024 * 1024
# Without an expiry from Qingbo, give up after this many attempts.
MAX_ATTEMPTS_WITHOUT_EXPIRY = 12
MP4_CONTENT_TYPE = "video/mp4"


# Why a copy failed, as the team may see it (the content route, README "Archive"): a
# class, never the worker's error text, which can name addresses and the store.
UNREACHABLE = "link_unreachable"  # blocked by the egress policy, unresolved, transport error
LINK_ERROR = "link_error"  # the link answered something other than 200
NOT_A_VIDEO = "not_a_video"
TOO_LARGE = "too_large"  # more than QGW_ARCHIVE_MAX_BYTES, declared or sent
STORE_ERROR = "store_error"
ERROR_CLASSES = (UNREACHABLE, LINK_ERROR, NOT_A_VIDEO, TOO_LARGE, STORE_ERROR)


class CopyFailed(Exception):
    """This attempt did not store the video: `kind` (one of ERROR_CLASSES) and a detail
    for operators (naming no secret). `final`: trying again cannot help."""

    def __init__(self, kind: str, detail: str, *, final: bool = False) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.final = final


def error_class(last_error: str | None) -> str:
    """The class of a recorded failure (`<class>: <detail>`), for the team's eyes."""
    kind = (last_error or "").split(":", 1)[0]
    return kind if kind in ERROR_CLASSES else "archive_failed"


def looks_like_mp4(head: bytes) -> bool:
    """An ISO base media file starts with a box whose type is `ftyp` (ISO/IEC 14496-12)."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


# Called in the transaction that stores a task's last video, with the task's id and its
# team's answer version: the task domain announces `archived` to the app.
OnArchived = Callable[[asyncpg.Connection, str, str], Awaitable[None]]


async def _announce_nothing(conn: asyncpg.Connection, task_id: str, version: str) -> None:
    return None


class Archiver:
    def __init__(
        self,
        settings: Settings,
        store: Any,
        policy: DestinationPolicy,
        on_archived: OnArchived = _announce_nothing,
    ) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy
        self.on_archived = on_archived
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.archive_read_timeout_seconds, connect=10.0),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def retry_at(self, row: Any) -> datetime | None:
        """When to try again, or None: the link will be gone by then."""
        base, ceiling = (
            self.settings.archive_retry_base_seconds,
            self.settings.archive_retry_max_seconds,
        )
        delay = min(ceiling, base * 2 ** max(0, row["attempts"] - 1)) * random.uniform(0.5, 1.0)
        at = datetime.now(UTC) + timedelta(seconds=delay)
        if row["expires_at"] is not None:
            return at if at < row["expires_at"] else None
        return at if row["attempts"] < MAX_ATTEMPTS_WITHOUT_EXPIRY else None

    async def archive(self, pool: asyncpg.Pool, task_id: str, index: int) -> str:
        """One attempt at one video: "stored", "retry", "failed" or "skipped"."""
        lease = self.settings.archive_lease_seconds
        async with pool.acquire() as conn:
            row = await repository.claim(conn, task_id, index, lease_seconds=lease)
        if row is None:
            return "skipped"
        try:
            size, digest = await self.copy(row["source_url"], row["object_key"])
        except CopyFailed as exc:
            retry_at = None if exc.final else self.retry_at(row)
            if exc.kind == TOO_LARGE:
                ARCHIVE_TOO_LARGE.inc()
            async with pool.acquire() as conn:
                await repository.record_failure(
                    conn, task_id=task_id, index=index, error=str(exc), retry_at=retry_at
                )
            outcome = "retry" if retry_at is not None else "failed"
            ARCHIVE_VIDEOS.labels(outcome).inc()
            log = logger.warning if outcome == "retry" else logger.error
            log(
                "video not archived",
                extra={"task_id": task_id, "index": index, "outcome": outcome, "error": str(exc)},
            )
            return outcome
        async with pool.acquire() as conn, conn.transaction():
            stored = await repository.record_stored(
                conn,
                task_id=task_id,
                index=index,
                size=size,
                sha256=digest,
                content_type=MP4_CONTENT_TYPE,
            )
            if stored is None:
                return "skipped"
            version = await repository.archived_task_version(conn, task_id)
            if version is not None:  # the last of its videos: tell the app, if it listens
                await self.on_archived(conn, task_id, version)
        ARCHIVE_VIDEOS.labels("stored").inc()
        ARCHIVE_BYTES.inc(size)
        ARCHIVE_WAIT.observe(float(stored["waited"]))
        logger.info("video archived", extra={"task_id": task_id, "index": index, "bytes": size})
        return "stored"

    async def copy(self, url: str, key: str) -> tuple[int, str]:
        """Stream `url` into the store at `key`; its size and SHA-256."""
        try:
            scheme, host, port = self.policy.check_url(url)
            addresses = await self.policy.resolve(host, port)
        except (BlockedDestination, UnresolvedHost) as exc:
            raise CopyFailed(UNREACHABLE, str(exc)) from None
        parts = urlsplit(url)
        address = addresses[0]
        dial = f"[{address}]" if address.version == 6 else str(address)
        target = urlunsplit((scheme, f"{dial}:{port}", parts.path or "/", parts.query, ""))
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        digest = hashlib.sha256()
        size = 0
        limit = self.settings.archive_max_bytes
        too_large = CopyFailed(TOO_LARGE, f"the link sent more than {limit} bytes", final=True)
        try:
            async with self._http.stream(
                "GET", target, headers={"Host": parts.netloc}, extensions=extensions
            ) as response:
                if response.status_code != 200:
                    raise CopyFailed(LINK_ERROR, f"the link answered HTTP {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > limit:  # refused before a byte of the body is read
                    raise CopyFailed(
                        TOO_LARGE, f"the link declared {declared} bytes, over {limit}", final=True
                    )
                chunks = response.aiter_bytes(CHUNK_BYTES)
                head = b""
                async for chunk in chunks:  # enough of the start to check what it is
                    head += chunk
                    if len(head) >= 8:
                        break
                if not looks_like_mp4(head):
                    raise CopyFailed(NOT_A_VIDEO, "the link did not serve an MP4 video")

                async def hashed() -> AsyncIterator[bytes]:
                    nonlocal size
                    for piece in (head,):
                        digest.update(piece)
                        size += len(piece)
                        yield piece
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > limit:  # no Content-Length, or one that lied: cut off
                            raise too_large
                        digest.update(chunk)
                        yield chunk

                if 0 < declared <= PART_BYTES:
                    # One PUT instead of a multipart upload's three requests: small
                    # videos were held under the goal against the floor with multipart
                    # (bench/archive.py; docs/decisions/013-archive-copier.md); the body is
                    # at most one part in memory.
                    body = b"".join([piece async for piece in hashed()])
                    await obstore.put_async(self.store, key, body, use_multipart=False)
                else:
                    # Parts of 5 MiB (S3's least), four in flight: memory stays near
                    # 20 MB whatever the size (obstore's default of 12 in flight, ~60 MB).
                    await obstore.put_async(
                        self.store, key, hashed(), chunk_size=PART_BYTES, max_concurrency=4
                    )
        except httpx.HTTPError as exc:
            raise CopyFailed(UNREACHABLE, f"download failed: {type(exc).__name__}") from None
        except CopyFailed:
            raise
        except Exception as exc:  # obstore's errors: the store could not take it
            if size > limit:  # the cut-off, raised inside the store's upload
                raise too_large from None
            detail = f"the store refused it: {type(exc).__name__}: {exc}"[:300]
            raise CopyFailed(STORE_ERROR, detail) from None
        return size, digest.hexdigest()


async def apply_retention(pool: asyncpg.Pool, store: Any, *, days: int, limit: int = 500) -> int:
    """Delete kept copies older than `days` (QGW_ARCHIVE_RETENTION_DAYS); their tasks then
    show `expired` and /content answers 410. Idempotent: a copy already gone is fine."""
    async with pool.acquire() as conn:
        due = await repository.past_retention(conn, days=days, limit=limit)
    for row in due:
        # Deleted before (a run cut short)? Then only the row is left to mark.
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(store, row["object_key"])
        async with pool.acquire() as conn:
            await repository.mark_expired(conn, task_id=row["task_id"], index=row["idx"])
    if due:
        ARCHIVE_VIDEOS.labels("expired").inc(len(due))
        logger.info("archived videos past retention deleted", extra={"count": len(due)})
    return len(due)
