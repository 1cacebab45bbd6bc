"""One Lua script's calls on a Redis connection of their own, sent in batches: the admission and
the release of streams, thousands a second in a reconnect storm (or when a drain ends them).

Through the client, every call took a pooled connection and gave it back, checked it for stray
data, went through a retry wrapper and the metrics hooks, and read its reply through redis-py's
parser, each step an await: about 140 us of CPU per call in a storm's profile. Here one batch
is in flight at a time; calls made meanwhile (or in the same turn of the event loop) wait and
go together in the next: one write of their EVALSHAs. redis-py connects (its handshake: AUTH,
SELECT, TLS, a Sentinel's master), then one reader task feeds what arrives to a hiredis reader
and settles the calls in order, with no await per reply and one timer per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import InvalidResponse, NoScriptError

from ..base import EngineUnavailable
from .connection import COMMAND_TIMEOUT, bounded, cannot_run
from .packing import pack_command
from .scripts import Run

Call = tuple[list[str], list[Any], asyncio.Future[Any]]
_STOPPING = "redis: the engine is stopping"
_NOT_YET = object()  # hiredis: no whole reply yet (False is a reply: RESP3's #f)


class ScriptLane:
    """Calls of one registered script (`client.register_script`). A call's reply, or its
    script error raised; EngineUnavailable when Redis does not answer within `bound` seconds
    of the batch's write, hangs up, cannot run it (`cannot_run`), or once the lane is
    closed. A batch cut short fails its calls still waiting and the connection is dropped, as
    its later replies could no longer be matched to their calls; the next batch connects
    again. NOSCRIPT (Redis restarted or flushed its scripts): the script is loaded and the
    calls that got it are sent again, once. A call whose future was cancelled before
    its batch left is not sent; one already sent may still run (the caller's bookkeeping must
    allow for that: RedisLimits waits for the outcome). A call is settled within a few bounds
    (a connect, the batch in flight, its own, one reload). On a cluster client every call goes
    alone through the client (its keys choose the node), bounded by `run`."""

    def __init__(self, script: Any, run: Run = bounded, *, bound: float = COMMAND_TIMEOUT) -> None:
        self._script = script
        self._client = script.registered_client
        self._run = run
        self._bound = bound
        self._queue: list[Call] = []
        self._batch: list[Call] = []  # in flight: its replies are read in this order
        self._replied = 0  # how many of the batch's replies have been read
        self._loading = False  # a SCRIPT LOAD's reply comes before the batch's
        self._reloaded = False  # the batch in flight was sent after a SCRIPT LOAD
        self._again: list[Call] = []  # calls of the batch that got NOSCRIPT
        self._deadline: asyncio.TimerHandle | None = None
        self._connection: AbstractConnection | None = None
        self._reading: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # disconnects under way
        self._kicked = False
        self._closed = False
        self.batches = 0  # batches written (for tests and benchmarks)

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        return await self.submit(keys, args)

    def submit(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The call, queued for the next batch: its outcome, as a future."""
        loop = asyncio.get_running_loop()
        if not isinstance(self._client, aioredis.Redis):
            return asyncio.ensure_future(self._run(self._script(keys=keys, args=args)))
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(EngineUnavailable(_STOPPING))
            return future
        self._queue.append((keys, args, future))
        self._kick()
        return future

    async def close(self) -> None:
        self._closed = True
        for task in (self._connecting, self._reading):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        queued, self._queue = self._queue, []
        connection = self._drop(EngineUnavailable(_STOPPING), queued)
        if connection is not None:
            await connection.disconnect(nowait=True)
        await asyncio.gather(*self._closing, return_exceptions=True)

    # sending ----------------------------------------------------------------------------------
    def _kick(self) -> None:
        """Send the queue once this turn of the loop is over (calls made in it join), unless a
        batch is in flight: its last reply sends the next."""
        if not self._kicked and not self._batch:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._send_queued)

    def _send_queued(self) -> None:
        self._kicked = False
        if self._batch or self._closed:
            return
        self._queue = [call for call in self._queue if not call[2].done()]  # (callers who left)
        if not self._queue:
            return
        if self._connection is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        batch, self._queue = self._queue, []
        self._write(batch, load_first=False)

    def _write(self, calls: list[Call], *, load_first: bool) -> None:
        connection = self._connection
        assert connection is not None and connection._writer is not None
        sha = self._script.sha
        pieces: list[bytes] = []
        if load_first:
            pieces += pack_command(connection, "SCRIPT", "LOAD", self._script.script)
        batch = []
        for call in calls:
            keys, args, future = call
            try:
                pieces += pack_command(connection, "EVALSHA", sha, len(keys), *keys, *args)
            except Exception as exc:  # noqa: BLE001 - an argument redis-py cannot send
                future.set_exception(exc)
                continue
            batch.append(call)
        if not batch:
            if self._queue:
                self._kick()
            return
        self._batch, self._replied, self._again = batch, 0, []
        self._loading = self._reloaded = load_first
        self.batches += 1
        self._deadline = asyncio.get_running_loop().call_later(self._bound, self._expired)
        try:
            # (uvloop raises on a transport closing: the server hung up, not read yet)
            connection._writer.write(b"".join(pieces))
        except Exception as exc:  # noqa: BLE001
            self._lost(EngineUnavailable(f"redis: {exc}"))

    async def _connect(self) -> None:
        """redis-py's connection and handshake; the reader task from then on."""
        connection: AbstractConnection | None = None
        try:
            connection = self._client.connection_pool.make_connection()
            async with asyncio.timeout(self._bound):
                await connection.connect()
        except asyncio.CancelledError:
            if connection is not None:
                await connection.disconnect(nowait=True)
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable, or the handshake refused (-BUSY,
            # a SELECT out of range): the calls waiting for it fail as unavailable
            queued, self._queue = self._queue, []
            message = "no answer in time" if isinstance(exc, TimeoutError) else exc
            self._fail(queued, EngineUnavailable(f"redis: {message}"))
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)
            return
        finally:
            self._connecting = None
        encoder = connection.encoder  # (the reader as redis-py's own hiredis parser makes it)
        decoding = (
            {"encoding": encoder.encoding, "errors": encoder.encoding_errors}
            if encoder.decode_responses
            else {}
        )
        reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_NOT_YET,
            **decoding,
        )
        self._connection = connection
        self._reading = asyncio.get_running_loop().create_task(self._read(connection, reader))
        self._kick()

    # reading ----------------------------------------------------------------------------------
    async def _read(self, connection: AbstractConnection, reader: hiredis.Reader) -> None:
        stream = connection._reader
        assert stream is not None
        me = asyncio.current_task()
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    raise ConnectionError("Connection closed by server.")
                reader.feed(data)
                while (reply := reader.gets()) is not _NOT_YET:
                    if isinstance(reply, hiredis.PushNotification):
                        continue  # (RESP3: a server's own message, not a reply)
                    self._on_reply(reply)
                    if self._reading is not me:
                        return  # (the connection was dropped: the rest is not ours)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost connection: its batch fails
            self._lost(EngineUnavailable(f"redis: {exc}"))

    def _on_reply(self, reply: Any) -> None:
        """One reply, in order."""
        if self._loading:
            self._loading = False
            if isinstance(reply, Exception):
                self._lost(EngineUnavailable(f"redis: {reply}"))
            return
        if cannot_run(reply) or not self._batch:  # (or a reply nobody asked for: the
            # stream is out of step)
            self._lost(EngineUnavailable(f"redis: {reply}"))
            return
        call = self._batch[self._replied]
        self._replied += 1
        future = call[2]
        if isinstance(reply, NoScriptError) and not self._reloaded:
            self._again.append(call)  # (once: a script loaded and at once unknown again is
            # a server the lane cannot serve, and the call gets the error)
        elif not future.done():  # (else its caller left)
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if self._replied == len(self._batch):
            self._batch_done()

    def _batch_done(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        again = [call for call in self._again if not call[2].done()]
        self._batch, self._again = [], []
        if again:
            self._write(again, load_first=True)
        elif self._queue:
            self._kick()

    # failing ----------------------------------------------------------------------------------
    def _expired(self) -> None:
        self._deadline = None
        self._lost(EngineUnavailable("redis: no answer in time"))

    def _lost(self, failure: EngineUnavailable) -> None:
        """The batch in flight fails and the connection goes (its late replies with it); the
        queue goes to a new connection."""
        connection = self._drop(failure, [])
        if connection is not None:
            closing = asyncio.get_running_loop().create_task(connection.disconnect(nowait=True))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if self._queue and not self._closed:
            self._kick()

    def _drop(self, failure: EngineUnavailable, also: list[Call]) -> AbstractConnection | None:
        """Fail the batch in flight (and `also`), forget the connection: returned, to
        disconnect."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        batch, self._batch, self._again, self._loading = self._batch, [], [], False
        self._reloaded = False
        self._fail(batch + also, failure)
        connection, self._connection = self._connection, None
        reading, self._reading = self._reading, None
        if reading is not None and reading is not asyncio.current_task():
            reading.cancel()
        return connection

    @staticmethod
    def _fail(calls: list[Call], failure: EngineUnavailable) -> None:
        for *_, future in calls:
            if not future.done():
                future.set_exception(failure)
