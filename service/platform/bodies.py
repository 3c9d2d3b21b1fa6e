"""Reading a request body within bounds: at most so many bytes, before a deadline, and (the
routes' part, service/web.py) only once the caller is known. A body is the one thing a
stranger can make the API hold: read unbounded and then parsed, a body of `[{},{},...]`
became many times its size in Python objects (issue 31; tests/test_hostile_bodies.py;
docs/decisions/010-bounded-bodies.md)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from service.platform.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

BodyReader = Callable[[Request], Awaitable[bytes]]

# A task body has a few dozen JSON objects and arrays; a body of countless small ones is
# small to send and costs ~70 bytes of Python objects per 3 bytes sent once parsed.
MAX_JSON_CONTAINERS = 10_000


def declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The Content-Length a request declares (0 when none, or not a plain number)."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and len(value) <= 18:
            return int(value)
    return 0


async def read_body(request: Request, *, max_bytes: int, timeout: float) -> bytes:
    """The whole body, or 413 past `max_bytes` (declared or sent), or 408 when it is not
    all in within `timeout` seconds. Nothing more than `max_bytes` is ever held."""
    if declared_length(request.scope["headers"]) > max_bytes:
        raise PayloadTooLarge(f"request body over {max_bytes} bytes")
    deadline = asyncio.get_running_loop().time() + timeout
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive_before(receive, deadline, timeout)
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body over {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def receive_before(receive: Receive, deadline: float, timeout: float) -> Message:
    """The next message, or RequestTimeout at `deadline` (loop time).

    Arming and disarming a timer is a measurable share of a submission's CPU, and almost
    every body is already in when it is asked for. So the receive is started without one,
    and a timer is armed only if it has to wait."""
    pending = receive()
    if not isinstance(pending, types.CoroutineType):  # some other awaitable: no fast path
        try:
            async with asyncio.timeout_at(deadline):
                return await pending
        except TimeoutError:
            raise RequestTimeout(_late(timeout)) from None
    try:
        waiting_on = pending.send(None)
    except StopIteration as done:  # it was in: no suspension, no timer
        message: Message = done.value
        return message
    try:
        async with asyncio.timeout_at(deadline):
            return await _resume(pending, waiting_on)
    except TimeoutError:
        raise RequestTimeout(_late(timeout)) from None


def _late(timeout: float) -> str:
    return f"the request body was not all received within {timeout:g} s"


@types.coroutine
def _resume(pending: Coroutine[Any, Any, Message], waiting_on: Any) -> Generator[Any, Any, Message]:
    """Finish a coroutine that was started by hand and suspended on `waiting_on`, as
    `await` would have: what it waits on goes up to the task, what comes back goes down."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # cancellation (the deadline) goes down to it too
            try:
                waiting_on = pending.throw(exc)
            except StopIteration as done:
                result: Message = done.value
                return result
        else:
            try:
                waiting_on = pending.send(sent)
            except StopIteration as done:
                result = done.value
                return result


def refuse_json_bombs(body: bytes) -> None:
    """400 for a body of more JSON objects and arrays than any task needs, before it is
    parsed (counting is a scan in C; braces inside strings count too, so it errs on the
    safe side by a task's few braces of prompt)."""
    if body.count(b"{") + body.count(b"[") > MAX_JSON_CONTAINERS:
        raise InvalidRequest(
            f"body: more than {MAX_JSON_CONTAINERS} JSON objects and arrays", param="body"
        )


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` whole, then whatever comes next on the connection (a
    disconnect): for a handler that reads the body itself after it was read here."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
