"""Hypercorn's asyncio TCP server with a timer, not a task, for the keep-alive idle timeout
(idle_timer.py).

It also hosts the fast lane (fast_lane.py): plain `GET`s of the long-poll and SSE paths
served past Hypercorn's request parsing and task per request, on by default (FAST_LANE).
With the lane on, a plain-TCP connection starts without this class at all (lane_front.py)
and gets one only when it sends a request the lane does not serve.

And it closes a connection gracefully when the answer went out before the request's body was
all read (a 413 for a body over 1 MiB, a 401 or 415 answered before reading; PROTOCOL 7).
Hypercorn closes such a socket at once with the rest of the body unread in its receive buffer,
so the kernel sends RST instead of FIN and the client, still sending, often loses the answer it
was sent. Here the answer is followed by FIN (the write side shut down) and the rest of the body
is read and thrown away until the client closes, for at most LINGER_SECONDS and LINGER_MAX_BYTES
(the "lingering close" of Apache and nginx); past either bound the socket is cut (a slow-loris
client holds nothing longer than that).

`install()` is the one place that hands this class (and lane_front's listener) to
`hypercorn.asyncio.run`; `rankpulse serve` calls it. Both override internals of one Hypercorn
minor version, hence the version check at import: an upgrade fails loudly here instead of
misbehaving.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import math
import os
import socket
import types
from typing import Any

import h11
import hypercorn.asyncio.run as hypercorn_run
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol

from ..config import ConfigError
from .dead_peers import bound_listener
from .fast_lane import FastLane
from .idle_timer import IdleTimer, idle_connections
from .lane_front import serve_front, served_before

# Written against hypercorn/asyncio/tcp_server.py of 0.18.x (run, protocol_send, _read_data,
# _close, _initiate_server_close): re-read that file before widening this.
SUPPORTED_HYPERCORN = "0.18."
_version = importlib.metadata.version("hypercorn")
if not _version.startswith(SUPPORTED_HYPERCORN):
    raise ImportError(
        f"quart_app.web.hypercorn_fast was written for hypercorn {SUPPORTED_HYPERCORN}x, "
        f"found {_version}: re-check it against hypercorn/asyncio/tcp_server.py"
    )

KEEP_ALIVE_ENV = "KEEP_ALIVE_SECONDS"
DEFAULT_KEEP_ALIVE_SECONDS = 5.0  # Hypercorn's own default


def keep_alive_seconds(environ: dict[str, str] | None = None) -> float:
    """Seconds an idle keep-alive connection stays open (KEEP_ALIVE_SECONDS)."""
    return _seconds(KEEP_ALIVE_ENV, DEFAULT_KEEP_ALIVE_SECONDS, environ)


LINGER_ENV = "LINGER_SECONDS"
# Apache's lingering close gives up after 2 s of silence; 2 s in all is plenty on any network
# that delivered the body this far, and short beside DRAIN_SECONDS + 5 s (PROTOCOL 3.7).
DEFAULT_LINGER_SECONDS = 2.0
# What is read and thrown away at most after an early answer: the rest of a 16 MiB upload
# with room to spare, while one connection cannot make the server read without end.
LINGER_MAX_BYTES = 32 * 1024 * 1024


def linger_seconds(environ: dict[str, str] | None = None) -> float:
    """Seconds an early-answered request's unread body is read and discarded (LINGER_SECONDS)."""
    return _seconds(LINGER_ENV, DEFAULT_LINGER_SECONDS, environ)


def _seconds(name: str, default: float, environ: dict[str, str] | None) -> float:
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be > 0, got {raw!r}")
    return value


FAST_LANE_ENV = "FAST_LANE"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def fast_lane_enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether plain GETs of /api/poll and /api/events take the fast lane (FAST_LANE, on)."""
    raw = (os.environ if environ is None else environ).get(FAST_LANE_ENV, "").strip().lower()
    if raw == "" or raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{FAST_LANE_ENV} must be true or false, got {raw!r}")


def install(fast_lane: bool | None = None, user_timeout: float = 0) -> None:
    """Make `hypercorn.asyncio.serve` build TimerTCPServer for each connection, with the
    fast lane unless `fast_lane` (default: FAST_LANE) says no, lingering LINGER_SECONDS; with
    the lane, plain-TCP connections start as lane_front's and become Hypercorn's only when
    the lane declines what they send. Every listener bounds how long its connections'
    data may go unacknowledged, `user_timeout` seconds (dead_peers.bound_listener)."""
    global _fast_lane, _linger_seconds, _user_timeout
    _fast_lane = fast_lane_enabled() if fast_lane is None else fast_lane
    _linger_seconds = linger_seconds()
    _user_timeout = user_timeout
    hypercorn_run.TCPServer = TimerTCPServer  # type: ignore[attr-defined]
    hypercorn_run.asyncio = _AsyncioForHypercorn("asyncio")  # type: ignore[attr-defined]


class _AsyncioForHypercorn(types.ModuleType):
    """`asyncio` as hypercorn.asyncio.run sees it: its `start_server` is `_listen`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def start_server(callback: Any, **kwargs: Any) -> asyncio.AbstractServer:
        return await _listen(callback, **kwargs)


async def _listen(callback: Any, *, sock: socket.socket, **kwargs: Any) -> asyncio.AbstractServer:
    """A listener of Hypercorn's worker on `sock`, as it asked asyncio.start_server for."""
    bound_listener(sock, _user_timeout)
    if _fast_lane:
        return await serve_front(callback, sock=sock, **kwargs)
    return await asyncio.start_server(callback, sock=sock, **kwargs)


_fast_lane = False
_linger_seconds = DEFAULT_LINGER_SECONDS
_user_timeout = 0.0


class TimerTCPServer(TCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_timer = IdleTimer(self, idle_connections(self.context))
        self.idle_task = self.idle_timer  # type: ignore[assignment]
        # Not with a read timeout (each read then goes through wait_for, as Hypercorn's) nor
        # with server names to check (the lane does not check Host against them).
        self.lane = (
            FastLane(self)
            if _fast_lane and self.config.read_timeout is None and not self.config.server_names
            else None
        )
        self._reading = False  # the read loop runs: only it can drain a lingering close
        self.lingering = False  # answered and shut for writing; reading to throw away
        self._linger_budget = LINGER_MAX_BYTES
        self._linger_deadline: asyncio.TimerHandle | None = None

    def lane_protocol(self) -> H11Protocol | None:
        """Hypercorn's HTTP/1.1 protocol when it is between requests with nothing read (the
        lane may take the next bytes), else None."""
        protocol = self.protocol.protocol  # (ProtocolWrapper: H11Protocol or H2)
        if type(protocol) is not H11Protocol or protocol.stream is not None:
            return None
        connection = protocol.connection
        if (
            type(connection) is not h11.Connection
            or connection.their_state is not h11.IDLE
            or connection.our_state is not h11.IDLE
            or connection.trailing_data != (b"", False)
        ):
            return None
        return protocol

    async def decline(self, data: bytes) -> None:
        """Bytes the lane does not serve: Hypercorn's."""
        await self.protocol.handle(RawData(data))

    def spawn(self, fn: Any, *args: Any) -> None:
        """A task in the connection's task group, as Hypercorn runs an app."""
        self._task_group.spawn(fn, *args)

    async def protocol_send(self, event: Event) -> None:
        # As Hypercorn's, with the idle updates as plain calls (no lock, no task).
        if isinstance(event, RawData):
            async with self.send_lock:
                try:
                    self.writer.write(event.data)
                    await self.writer.drain()
                except (ConnectionError, RuntimeError):
                    await self.protocol.handle(Closed())
        elif isinstance(event, Closed):
            await self._close()
        elif isinstance(event, Updated):
            if event.idle:
                self.idle_timer.arm()
            else:
                self.idle_timer.disarm()

    async def _read_data(self) -> None:
        # Hypercorn's loop, plus the lingering close; without a read timeout, no wait_for
        # wrapper around each read.
        reader = self.reader
        lane = self.lane
        timeout = self.config.read_timeout
        protocol = self.protocol.protocol
        if type(protocol) is H11Protocol:  # (the keep-alive limit counts what the lane served)
            protocol.keep_alive_requests += served_before(reader)
        self._reading = True
        heard_eof = False
        try:
            while not reader.at_eof():
                try:
                    if timeout is None:
                        data = await reader.read(MAX_RECV)
                    else:
                        data = await asyncio.wait_for(reader.read(MAX_RECV), timeout)
                except (ConnectionError, OSError, TimeoutError):  # (SSLError is an OSError)
                    break
                if self.lingering:
                    self._discard(len(data))
                elif lane is not None and data and lane.wants():
                    await lane.feed(data)
                else:
                    if lane is not None:
                        await lane.end()  # (EOF: a partial head it held goes first)
                    await self.protocol.handle(RawData(data))
                    heard_eof = not data
            if not self.lingering:
                if lane is not None:
                    await lane.end()
                if reader.at_eof() and not heard_eof:
                    # The EOF came with the last bytes, in one read (lane_front hands a
                    # connection over so): h11 hears it as from an empty read, and answers
                    # a head cut short with 400, as then.
                    await self.protocol.handle(RawData(b""))
            await self.protocol.handle(Closed())
        finally:
            self._reading = False
            if lane is not None:
                lane.gone()  # (a lane stream hears its client leave, as from Closed())

    async def _close(self) -> None:
        if self.lingering and self._reading:
            return  # (the read loop closes once the client did, or the linger ran out)
        if not self.lingering and self._reading and self._request_still_arriving():
            self._linger()
            return
        if self._linger_deadline is not None:
            self._linger_deadline.cancel()
            self._linger_deadline = None
        await super()._close()

    def _request_still_arriving(self) -> bool:
        """Whether the client may still be sending what Hypercorn will not read: a body
        answered before it was read whole, or bytes after a request h11 refused."""
        protocol = getattr(getattr(self, "protocol", None), "protocol", None)
        connection = getattr(protocol, "connection", None)  # (h2 and WebSocket: not h11's)
        return type(connection) is h11.Connection and connection.their_state in (
            h11.SEND_BODY,
            h11.ERROR,
        )

    def _linger(self) -> None:
        """Shut the write side (FIN after the answer), then let the read loop throw the rest
        of the request away until the client closes, for a bounded time and size."""
        self.lingering = True
        self.idle_timer.disarm()
        try:
            self.writer.write_eof()  # (after what is still buffered: the answer goes whole)
        except (NotImplementedError, OSError, RuntimeError):
            pass  # (TLS has no half close: the answer still goes, then the close)
        self._linger_deadline = self.loop.call_later(_linger_seconds, self._cut)

    def _discard(self, size: int) -> None:
        self._linger_budget -= size
        if self._linger_budget < 0:
            self._cut()

    def _cut(self) -> None:
        """The linger ran out: close at once (the kernel resets what is still unread)."""
        self._linger_deadline = None
        self.writer.transport.abort()  # (ends the read loop: its reader sees EOF)
