"""redis-py's own non-transactional pipeline behind the hand-made pipe's interface
(`service/quotas/pipe.py`): the comparator of `bench/quotas.py --mode pipelines`, which
hands it to the limiter (`RateLimiter(connect=RedisPyPipeline)`). The gateway runs on the
hand-made pipe; `docs/decisions/004-pipelined-redis.md` says why, and when to measure again.

The same batching idea as the pipe: the commands that arrive in one event-loop turn go in
one `pipeline(transaction=False).execute()`; a batch does not wait for the one before it
(it takes another pooled connection). The pool is the limiter's own, with the client
name, so its checks never queue behind arq's commands.

The same contract as the pipe: Redis's error answers are RedisReplyError (NOSCRIPT keeps
its code, the limiter loads the script again on it); a handshake Redis refuses is
RedisRefused; a connection lost, or silent for `stall_seconds` (or the caller's bound),
is RedisLost, and every command of its batch fails with it. redis-py itself retries
nothing here: the limiter's one retry within its deadline is the only one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError

from service.quotas.pipe import RedisLost, RedisRefused, RedisReplyError


class _Batch:
    """The commands of one loop turn, their callers' futures, and the task sending them."""

    __slots__ = ("commands", "task", "waiters")

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.waiters: list[asyncio.Future[Any]] = []
        self.task: asyncio.Task[None] | None = None

    def fail(self, exc: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)


def _reply_error(reply: ResponseError) -> RedisReplyError:
    # redis-py strips the error code of the errors it has a class for; the limiter needs
    # NOSCRIPT's back.
    if isinstance(reply, NoScriptError):
        return RedisReplyError(f"NOSCRIPT {reply}")
    return RedisReplyError(str(reply))


class RedisPyPipeline:
    """Commands to the server `redis` (arq's client) talks to, on a pool of their own."""

    def __init__(self, redis: Redis, *, client_name: str, stall_seconds: float) -> None:
        source = redis.connection_pool
        kwargs = dict(source.connection_kwargs)
        kwargs.update(
            client_name=client_name,
            socket_timeout=stall_seconds,
            socket_connect_timeout=stall_seconds,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            retry_on_timeout=False,
        )
        pool = ConnectionPool(connection_class=source.connection_class, **kwargs)
        self._redis = Redis.from_pool(pool)  # closing the client closes the pool
        # Redis's answers as they come, as the pipe gives them (no SET -> True).
        self._redis.response_callbacks.clear()
        self.stall_seconds = stall_seconds
        self._batch: _Batch | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, *args: Any, seconds: float | None = None) -> Any:
        """Send one command and wait for its answer, at most `seconds` (the stall bound)."""
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            loop.call_soon(self._send, batch)
        waiter: asyncio.Future[Any] = loop.create_future()
        batch.commands.append(args)
        batch.waiters.append(waiter)
        bound = self.stall_seconds if seconds is None else seconds
        timer = loop.call_later(bound, self._stalled, batch)
        try:
            reply = await waiter
        finally:
            timer.cancel()
        if isinstance(reply, ResponseError):
            raise _reply_error(reply)
        return reply

    def _send(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._batch = None
        batch.task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._sending.add(batch.task)
        batch.task.add_done_callback(self._sending.discard)

    def _stalled(self, batch: _Batch) -> None:
        """No answer in time: the batch is given up (cancelling it, redis-py drops its
        connection, whose answers would come out of line)."""
        if batch.task is not None:
            batch.task.cancel()
        batch.fail(RedisLost("Redis did not answer in time"))

    async def _execute(self, batch: _Batch) -> None:
        pipeline = self._redis.pipeline(transaction=False)
        for command in batch.commands:
            pipeline.execute_command(*command)
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except asyncio.CancelledError:
            batch.fail(RedisLost("Redis did not answer in time"))
            return
        except AuthenticationError as exc:  # its message is Redis's, never the password
            batch.fail(RedisRefused(f"Redis refused AUTH: {exc}"))
            return
        except ResponseError as exc:  # raised, not returned: the handshake's (SELECT)
            batch.fail(RedisRefused(f"Redis refused the connection's handshake: {exc}"))
            return
        except RedisError as exc:  # lost, timed out, refused, TLS, not RESP
            batch.fail(RedisLost(str(exc)))
            return
        except Exception as exc:  # the callers have it: nobody awaits this task
            batch.fail(exc)
            return
        for waiter, reply in zip(batch.waiters, replies, strict=True):
            if not waiter.done():  # one given up on stays in line
                waiter.set_result(reply)

    async def aclose(self) -> None:
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        await self._redis.aclose()
