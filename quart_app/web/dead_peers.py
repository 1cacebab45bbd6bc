"""Finding peers that vanished without a FIN (PROTOCOL 3.6: within 60 s on every transport).

SSE has no upstream: the only probe is the heartbeat write. A write to a peer that is gone
stays unacknowledged, and by default Linux retransmits it for about 15 minutes before it
gives up. TCP_USER_TIMEOUT bounds that: data unacknowledged for that long fails the socket
(the transport closes, Hypercorn tells the stream the client left). Keepalive probes cover a
socket with nothing to send at all.

WebSocket: the server sends a Ping frame every WS_PING_SECONDS straight to the socket, and
closes a socket that sent nothing (no Pong, no frame) for WS_PING_TIMEOUT_SECONDS after a
ping. Hypercorn drops Pong frames before the application sees them, so "heard from" is
read below it: every byte wsproto receives for this socket counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from typing import Any

# An unmasked WebSocket Ping frame with no payload (RFC 6455 5.5.2): server to client.
PING_FRAME = b"\x89\x00"


def bound_unacknowledged(transport: asyncio.BaseTransport, user_timeout: float) -> None:
    """TCP_USER_TIMEOUT and short keepalive on a stream's socket (0: leave the kernel's), unless
    its listener gave them to it already (bound_listener)."""
    if user_timeout <= 0 or _listeners_bound == user_timeout:
        return
    transport_socket = transport.get_extra_info("socket")
    if transport_socket is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        # One socket object on the descriptor for the five options: uvloop's transport
        # socket makes (and detaches) one per call, half of this function's cost per stream.
        sock = socket.socket(fileno=transport_socket.fileno())
        try:
            _bound(sock, user_timeout)
        finally:
            sock.detach()  # (the descriptor stays the transport's)


def bound_listener(listener: socket.socket, user_timeout: float) -> None:
    """The same options on a listening socket, once: Linux copies them to every socket it
    accepts there, so no stream (nor poll, nor request) needs calls of its own."""
    global _listeners_bound
    if user_timeout <= 0 or listener.type != socket.SOCK_STREAM:
        return
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return  # (a unix socket has no TCP options)
    try:
        _bound(listener, user_timeout)
    except (OSError, AttributeError):
        return  # (not Linux: each stream sets them itself)
    _listeners_bound = user_timeout


# The user timeout every listener of this process gave its sockets (0: none did).
_listeners_bound = 0.0


def _bound(sock: socket.socket, user_timeout: float) -> None:
    idle = max(1, int(user_timeout / 2))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(user_timeout * 1000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 3))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


class _Watched:
    __slots__ = ("transport", "closing", "heard", "pinged", "__weakref__")

    def __init__(self, transport: asyncio.WriteTransport, closing: Any) -> None:
        self.transport = transport
        self.closing = closing
        self.heard = time.monotonic()
        self.pinged = 0.0  # when the unanswered ping went out (0: none pending)


class WebSocketPinger:
    """Pings every watched WebSocket; aborts the ones that stopped answering. Driven by the
    hub's once-a-second tick (no task per socket)."""

    def __init__(self, every: float, timeout: float) -> None:
        self.every = every
        self.timeout = timeout
        self._sockets: weakref.WeakSet[_Watched] = weakref.WeakSet()
        self._next_ping = time.monotonic() + every
        self.dead = 0  # sockets aborted for not answering (/metrics)

    def watch(self, send: Any, transport: asyncio.WriteTransport, closing: Any) -> object | None:
        """Start watching a Hypercorn WebSocket; keep the returned token alive while it is
        open (None: not a Hypercorn h11 socket, nothing to watch)."""
        try:
            connection = send.__self__.connection  # hypercorn WSStream -> wsproto Connection
            receive_data = connection.receive_data
        except AttributeError:
            return None
        watched = _Watched(transport, closing)

        def heard(data: bytes | None) -> None:
            watched.heard = time.monotonic()
            watched.pinged = 0.0
            receive_data(data)

        connection.receive_data = heard
        self._sockets.add(watched)
        return watched

    def tick(self, now: float) -> None:
        ping = now >= self._next_ping
        if ping:
            self._next_ping = now + self.every
        for watched in list(self._sockets):
            transport = watched.transport
            if transport.is_closing() or watched.closing():
                continue
            if watched.pinged and now - watched.pinged >= self.timeout:
                self.dead += 1
                transport.abort()  # the peer is gone: no Close handshake to wait for
            elif ping and not watched.pinged:
                if now - watched.heard >= self.every / 2:  # a busy client proves itself
                    watched.pinged = now
                    transport.write(PING_FRAME)
