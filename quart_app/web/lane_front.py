"""Connections that start on the fast lane, without Hypercorn's per-connection objects.

For every connection it accepts, Hypercorn builds asyncio's StreamReader, StreamWriter and a
task, then its TCPServer, a ProtocolWrapper with an H11Protocol (an h11.Connection), a
TaskGroup, and the socket's two addresses; at the close it undoes all of it. In a reconnect
storm that is most of what a new SSE stream costs beyond our own set-up: a copy of the
server whose lane wrote a canned answer at once still cost 0.33 to 0.36 ms per connection,
where asyncio's streams alone cost 0.13 ms (bench/storm_floor.py).

Here a plain-TCP listener accepts into FrontConnection, an asyncio Protocol with a FastLane
(fast_lane.py). Long-polls and SSE streams are served as on a Hypercorn connection: the same
lane code, Hypercorn's idle timer (idle_timer.py), keep-alive limit, access log and request
count. The first bytes the lane declines (another path or method, a body, an Upgrade,
HTTP/2, a head it cannot read...) hand the connection to Hypercorn for good: the transport
gets asyncio's stream protocol, its reader gets every byte read so far, and Hypercorn's own
connection callback runs as if it had just accepted the connection (hypercorn_fast's
TimerTCPServer, with a lane of its own for later requests).

`serve_front` is what hypercorn_fast.install() has `hypercorn.asyncio.run` call in place of
`asyncio.start_server`: TLS listeners, and configurations the lane does not serve (a read
timeout, server names), stay Hypercorn's.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from hypercorn.utils import parse_socket_addr

from .fast_lane import FastLane
from .idle_timer import IdleTimer, _IdleConnections, idle_connections

STREAM_READER_LIMIT = 2**16  # asyncio.start_server's, which Hypercorn's connections have

# The requests the lane served on each connection it handed to Hypercorn (by its reader): the
# keep-alive limit counts them too (hypercorn_fast.TimerTCPServer takes them over).
_SERVED_BEFORE: weakref.WeakKeyDictionary[asyncio.StreamReader, int] = weakref.WeakKeyDictionary()


def served_before(reader: asyncio.StreamReader) -> int:
    """Requests the lane served on this connection before Hypercorn had it."""
    return _SERVED_BEFORE.pop(reader, 0)


# What Hypercorn 0.18's worker_serve's connection callback closes over: its app, config and
# worker context, and the set of connection tasks it waits for at shutdown.
_CALLBACK_CELLS = ("app", "config", "context", "server_tasks")


class Front:
    """One listener's shared part: what Hypercorn's worker gave its connection callback."""

    def __init__(self, callback: Callable[..., Coroutine[Any, Any, None]], family: int) -> None:
        # (hypercorn_fast pins the Hypercorn version this was read on)
        names = callback.__code__.co_freevars
        values = [cell.cell_contents for cell in callback.__closure__ or ()]
        cells = dict(zip(names, values, strict=True))
        missing = [name for name in _CALLBACK_CELLS if name not in cells]
        if missing:
            raise RuntimeError(f"Hypercorn's connection callback has no {missing}: re-read it")
        self.callback = callback
        self.family = family
        self.app = cells["app"]
        self.config = cells["config"]
        self.context = cells["context"]
        self._tasks: set[asyncio.Task[Any]] = cells["server_tasks"]
        self.loop = asyncio.get_running_loop()
        self.idle: _IdleConnections = idle_connections(self.context)

    def connection(self) -> FrontConnection:
        return FrontConnection(self)

    def task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task Hypercorn's shutdown waits for (up to its graceful_timeout), as it waits
        for its own connections'."""
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class FrontConnection(asyncio.streams.FlowControlMixin, asyncio.Protocol):
    """A connection served by the lane alone until it sends what the lane declines.

    As FastLane's connection it has TimerTCPServer's `loop`, `config`, `context`, `writer`,
    `idle_timer` and `_close()`, and, as its LaneProtocol (no H11Protocol here), `app`,
    `keep_alive_requests`, `ssl`, `client` and `server`."""

    ssl = False  # (TLS listeners stay Hypercorn's)

    def __init__(self, front: Front) -> None:
        super().__init__(front.loop)
        self._front = front
        self.loop = front.loop
        self.app = front.app
        self.config = front.config
        self.context = front.context
        self.keep_alive_requests = 0
        self.transport: asyncio.Transport | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.idle_timer = IdleTimer(self, front.idle)
        self.lane = FastLane(self)
        self._addresses: tuple[tuple[str, int] | None, tuple[str, int] | None] | None = None
        self._read = b""  # read, not yet given to the lane (it is busy, or about to be)
        self._serving: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._eof = False
        self._hypercorns = False  # handed to Hypercorn: nothing here is used any more
        self._lost = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no subclass)
        self.writer = _LaneWriter(self._transport(), self, None, self.loop)
        self.idle_timer.arm()  # (as Hypercorn's TCPServer.run, before the first read)

    def data_received(self, data: bytes) -> None:
        self._read = self._read + data if self._read else data
        if self._serving is None:
            self._serving = self._front.task(self._serve())
        elif len(self._read) > self.config.h11_max_incomplete_size and not self._reading_paused:
            # (a client pipelining while its poll waits: stop reading until it is answered)
            self._reading_paused = True
            self._transport().pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._serving is None:
            self._at_eof()
        return True  # (half-closed: an answer being made still goes out, as on Hypercorn's)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # (wakes a drain() waiting on a full buffer)
        self._lost = True
        self.idle_timer.release()
        self.lane.gone()  # (a lane stream hears its client leave)

    # FastLane's connection

    def lane_protocol(self) -> FrontConnection | None:
        return None if self._hypercorns else self

    async def decline(self, data: bytes) -> None:
        self._hand_to_hypercorn(data)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self._front.task(fn(*args))

    async def _close(self) -> None:
        self._shut()

    def _shut(self) -> None:
        self.idle_timer.release()
        transport = self._transport()
        if not transport.is_closing():
            transport.close()  # (after what is still buffered: the answer goes whole)

    async def _initiate_server_close(self) -> None:  # (the idle timer ran out)
        await self._close()

    @property
    def client(self) -> tuple[str, int] | None:
        return self._socket_addresses()[0]

    @property
    def server(self) -> tuple[str, int] | None:
        return self._socket_addresses()[1]

    # What the lane serves, and what it does not

    async def _serve(self) -> None:
        """Give the lane what was read, in order, until nothing is left (a poll's answer is
        made here, as in Hypercorn's read loop; a stream runs in a task of its own)."""
        try:
            while self._read and not self._hypercorns and not self._transport().is_closing():
                data, self._read = self._read, b""
                if self._reading_paused:
                    self._reading_paused = False
                    self._transport().resume_reading()
                await self.lane.feed(data)
            if self._eof and not self._hypercorns and not self._read:
                self._at_eof()
        except Exception:
            self._shut()  # (as Hypercorn's connection ends when its task fails)
            raise
        finally:
            self._serving = None

    def _at_eof(self) -> None:
        """The client sent all it will, and the lane took all of it: a head it left partial
        is Hypercorn's to answer (as without the lane); a stream hears the client left and
        closes the connection once it ended; else the connection closes now."""
        partial = self.lane.held()
        if partial:
            self._hand_to_hypercorn(partial)
        elif not self.lane.gone():  # (a stream's answer being made still goes out)
            self._shut()

    def _hand_to_hypercorn(self, data: bytes) -> None:
        """From now on the connection is Hypercorn's, as if it had just accepted it, with
        `data` and everything read after it in its reader."""
        self._hypercorns = True
        self.idle_timer.release()
        if self._lost:
            return  # (gone while the lane held its bytes: nobody to answer, nothing to start)
        transport = self._transport()
        reader = asyncio.StreamReader(limit=STREAM_READER_LIMIT, loop=self.loop)
        if self.keep_alive_requests:
            _SERVED_BEFORE[reader] = self.keep_alive_requests
        protocol = asyncio.StreamReaderProtocol(reader, self._front.callback, loop=self.loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)  # (the callback's task, as start_server's)
        if self._paused:  # type: ignore[attr-defined]  # (FlowControlMixin's)
            protocol.pause_writing()  # (the transport will not say it again)
        if self._reading_paused:  # (before the feed: the reader pauses it again if full)
            self._reading_paused = False
            transport.resume_reading()
        rest = data + self._read
        self._read = b""
        if rest:
            reader.feed_data(rest)
        if self._eof:
            reader.feed_eof()

    def _socket_addresses(self) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        if self._addresses is None:
            transport = self._transport()
            family = self._front.family
            peer = transport.get_extra_info("peername")
            own = transport.get_extra_info("sockname")
            self._addresses = (
                parse_socket_addr(family, peer) if peer else None,
                parse_socket_addr(family, own) if own else None,
            )
        return self._addresses

    def _transport(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport


class _LaneWriter(asyncio.StreamWriter):
    """The front's writer. asyncio's closes its transport when it is collected (3.11.5 on);
    a connection handed to Hypercorn outlives this one, with a writer of its own."""

    def __del__(self) -> None:
        pass


async def serve_front(
    callback: Callable[..., Coroutine[Any, Any, None]],
    *,
    sock: socket.socket,
    backlog: int = 100,
    **kwargs: Any,
) -> asyncio.AbstractServer:
    """Hypercorn's listener on `sock`: front connections for plain TCP when the lane can
    serve this configuration, else asyncio.start_server as Hypercorn calls it."""
    front = Front(callback, sock.family)
    config = front.config
    if kwargs.get("ssl") is not None or config.read_timeout is not None or config.server_names:
        return await asyncio.start_server(callback, sock=sock, backlog=backlog, **kwargs)
    return await front.loop.create_server(front.connection, sock=sock, backlog=backlog)
