"""A real HTTP webhook receiver on loopback, scripted per request, for the delivery tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int


@dataclass
class Receiver:
    """Answers each request with the next scripted status (then `default`); "hang" holds
    the request open until `release` is set."""

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    arrived: int = 0  # requests that came in, answered or not (a "hang" is held)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self) -> int | str:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]

    def events(self) -> list[str]:
        import json

        return [json.loads(r.body)["event"] for r in self.received]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.arrived += 1
            answer = receiver.next_answer()
            if answer == "hang":
                receiver.release.wait(timeout=30)
                answer = 200
            status = int(answer)
            with receiver.lock:
                receiver.received.append(
                    Received(received_headers(self.headers), body, time.time(), status)
                )
            self.send_response(status)
            if status in (429, 503):
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(f"answer {status}".encode())

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver(host: str = "127.0.0.1", **kwargs: Any) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs)
    server = ThreadingHTTPServer((host, 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://{host}:{server.server_address[1]}/hooks/qingbo"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def received_headers(headers: Any) -> dict[str, str]:
    """Names in lower case (they are case-insensitive; clients differ in what they send),
    and a name sent twice is a test failure, not a silent overwrite."""
    names = [name.lower() for name in headers]
    repeated = {name for name in names if names.count(name) > 1}
    assert not repeated, f"header sent more than once: {sorted(repeated)}"
    return {name.lower(): value for name, value in headers.items()}
