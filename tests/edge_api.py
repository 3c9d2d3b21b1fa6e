"""An API process of a test module's own (its peak memory and its pool are the test's to
read and to fill), and what the edge tests read of it: peak RSS, raw sockets."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from tests.conftest import Process, settings_env


@dataclass
class EdgeApi:
    url: str
    port: int
    process: Process

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def peak_rss(self) -> int:
        """The process's peak resident memory (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")


@contextmanager
def edge_api(settings: Settings, logs_dir: Path, **env: str) -> Iterator[EdgeApi]:
    """`python -m service api` on a port of its own; `env` adds QGW_ variables."""
    port = free_port()
    variables = settings_env(settings.model_copy(update={"public_base_url": None}))
    variables.update(env)
    process = Process(["api", "--port", str(port)], variables, logs_dir / "edge-api.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/healthz")
        yield EdgeApi(url=url, port=port, process=process)
    finally:
        process.stop()


class RawRequest:
    """A raw connection that has sent a request's head (and maybe part of its body), and
    what the server has answered on it so far."""

    def __init__(self, port: int, head: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(head.encode())
        self.sock.setblocking(False)
        self.received = b""

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the server answered and closed it
            self.sock.send(data)

    def answer(self) -> bytes:
        """Everything answered so far, without waiting (b"" for nothing yet)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ConnectionResetError):
                return self.received
            if not data:  # closed
                return self.received
            self.received += data

    def close(self) -> None:
        self.sock.close()
