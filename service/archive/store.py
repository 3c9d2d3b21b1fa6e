"""The object store named by QGW_ARCHIVE_URL, through obstore (one well-kept library for
the local filesystem, S3 and S3-compatible servers, GCS and Azure, streaming both ways)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from obstore.store import LocalStore, from_url

SCHEMES = ("file", "s3", "gs", "az", "abfs", "abfss", "http", "https")


def open_store(url: str, **options: Any) -> Any:
    """The store for `url`: `file:///var/lib/qgw/archive` (created if missing),
    `s3://bucket/prefix` (AWS_* settings; AWS_ENDPOINT for S3-compatible servers),
    `gs://bucket/prefix`, `az://container/prefix`."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"QGW_ARCHIVE_URL: unsupported scheme {scheme!r} ({', '.join(SCHEMES)})")
    if scheme == "file":
        root = Path(urlsplit(url).path)
        root.mkdir(parents=True, exist_ok=True)
        return LocalStore(root)
    return from_url(url, **options)


def object_key(team_id: UUID | str, task_id: str, index: int) -> str:
    """Where a video is kept: by team and task, nothing secret in it."""
    return f"{team_id}/{task_id}/{index}.mp4"


def can_sign(store: Any) -> bool:
    """Whether the store can hand out short-lived signed URLs (S3, GCS, Azure)."""
    return not isinstance(store, LocalStore)
