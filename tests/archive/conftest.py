"""A real S3-compatible server for the archive tests (bench/stack.py starts it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.stack import S3_BUCKET as BUCKET
from bench.stack import S3Server, s3_server

__all__ = ["BUCKET", "S3Server"]


@pytest.fixture(scope="session")
def s3_server_fixture() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server
