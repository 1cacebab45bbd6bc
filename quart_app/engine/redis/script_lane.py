"""One Lua script's calls on a Redis connection of their own, sent in batches: the admission of
new streams, thousands a second in a reconnect storm.

Through the client, every call took a pooled connection and gave it back, checked it for stray
data, went through a retry wrapper and the metrics hooks: about 140 us of CPU per admission,
a quarter of a new stream's cost on the Redis engine. Here one batch is in flight at a time:
calls made meanwhile (or in the same turn of the event loop) wait and go together in the next
one: one write of their EVALSHAs, their replies read in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from ..base import EngineUnavailable
from .connection import UNAVAILABLE, bounded
from .scripts import Run

Call = tuple[list[str], list[Any]]


class ScriptLane:
    """Calls of one registered script (`client.register_script`). A call's reply, or its
    script error raised; EngineUnavailable (from `run`, which bounds each batch) when Redis
    does not answer, hangs up or is read-only (a master demoted behind a plain URL), or once
    the lane is closed. A batch that fails or is cut short fails every call in it and the
    connection is dropped, as its later replies could no longer be matched to their calls;
    the next batch connects again. NOSCRIPT (Redis restarted or flushed its scripts): the
    script is loaded and the calls that got it are sent again. A call whose future was
    cancelled before its batch left is not sent; one already sent may still run (the
    caller's bookkeeping must allow for that: RedisLimits waits for the outcome). On a
    cluster client every call goes alone through the client (its keys choose the node)."""

    def __init__(self, script: Any, run: Run = bounded) -> None:
        self._script = script
        self._client = script.registered_client
        self._run = run
        self._connection: AbstractConnection | None = None
        self._queue: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # round trips made (for tests and benchmarks)

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        return await self.submit(keys, args)

    def submit(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The call, queued for the next batch: its outcome, as a future."""
        loop = asyncio.get_running_loop()
        if not isinstance(self._client, aioredis.Redis):
            return asyncio.ensure_future(self._run(self._script(keys=keys, args=args)))
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(EngineUnavailable("redis: the engine is stopping"))
            return future
        self._queue.append((keys, args, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_queued())
        return future

    async def close(self) -> None:
        self._closed = True
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.wait([self._sender])
        self._fail_queued()  # (a sender cancelled before it started never ran its finally)
        if self._connection is not None:
            await self._connection.disconnect()
            self._connection = None

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                batch = [call for call in batch if not call[2].done()]  # (callers who left)
                if batch:
                    await self._send(batch)
        finally:
            self._sender = None
            self._fail_queued()  # (only when close() cancelled the sender)

    def _fail_queued(self) -> None:
        queued, self._queue = self._queue, []
        for *_, future in queued:
            if not future.done():
                future.set_exception(EngineUnavailable("redis: the engine is stopping"))

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._run(self._round_trip([(keys, args) for keys, args, _ in batch]))
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else EngineUnavailable("redis: stopping")
            for *_, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # (its caller left)
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _round_trip(self, calls: list[Call]) -> list[Any]:
        # A send or read cut short (no answer in time, a lost connection) disconnects the
        # connection (redis-py's Connection does, on any exception): replies of this batch
        # still on their way are never read as a later batch's.
        connection = await self._connected()
        self.batches += 1
        replies = await self._evalsha(connection, calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await connection.send_command("SCRIPT", "LOAD", self._script.script)
            await connection.read_response()
            again = await self._evalsha(connection, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _evalsha(self, connection: AbstractConnection, calls: list[Call]) -> list[Any]:
        sha = self._script.sha
        commands = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except UNAVAILABLE:  # READONLY: a replica now; `run` says unavailable
                await connection.disconnect(nowait=True)  # (the rest of the replies unread)
                raise
            except ResponseError as exc:  # this call's error; the next reply follows
                replies.append(exc)
        return replies

    async def _connected(self) -> AbstractConnection:
        """The lane's connection, ready to send: as the client's pool hands one out
        (connected, nothing unread on it, else connected again)."""
        if self._connection is None:
            self._connection = self._client.connection_pool.make_connection()
        connection = self._connection
        await connection.connect()
        try:
            if await connection.can_read():  # (a stray reply)
                raise RedisConnectionError("the connection has data")
        except (RedisConnectionError, TimeoutError, OSError):  # (or the server hung up)
            await connection.disconnect()
            await connection.connect()
        return connection
