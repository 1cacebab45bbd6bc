"""The socket under a Hypercorn HTTP/1.1 response or WebSocket, for writing frames directly.

Each `await send(...)` through Hypercorn costs a coroutine chain (stream -> H11Protocol ->
h11 or wsproto -> TCPServer, with a lock and a drain) per write; at thousands of subscribers
that chain, not the socket, is the limit (SSE: 35k deliveries/s through `send`, 750k direct).
Once a stream is open, the hub writes its frames straight to the asyncio transport: HTTP/1.1
chunks for SSE, unmasked text frames for WebSocket, byte for byte what h11 or wsproto would
have written. Anything else (HTTP/2, another server, Quart's test client) gets None here and
is served through `send` as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..engine.base import Event
from ..engine.hub import HEARTBEAT
from ..metrics import STREAM_PATHS

# Past this many bytes waiting in the transport, the hub leaves events queued (where the
# connection's send budget judges the client) instead of buffering without bound.
HIGH_WATER = 256 * 1024
PING = b": ping\n\n"
PING_CHUNK = b"%x\r\n%b\r\n" % (len(PING), PING)


def hypercorn_h11_writer(send: Any, scope: dict[str, Any]) -> asyncio.StreamWriter | None:
    writer = _h11_writer(send, scope)
    # Counted in /metrics: a Hypercorn upgrade that moves these internals shows up there.
    kind = "sse" if scope["type"] == "http" else "ws"
    STREAM_PATHS[kind, "fallback" if writer is None else "fast"] += 1
    return writer


def _h11_writer(send: Any, scope: dict[str, Any]) -> asyncio.StreamWriter | None:
    if scope["type"] == "http" and scope.get("http_version") != "1.1":
        return None  # h11 frames the body in chunks only for HTTP/1.1 peers
    direct = getattr(send, "direct_writer", None)  # the fast lane's send (lane_stream.py)
    if isinstance(direct, asyncio.StreamWriter):
        return direct
    try:
        stream = send.__self__  # hypercorn.protocol: HTTPStream or WSStream
        protocol = stream.send.__self__  # hypercorn.protocol.h11.H11Protocol
        server = protocol.send.__self__  # hypercorn.asyncio.tcp_server.TCPServer
        writer = server.writer
        transport = writer.transport
    except AttributeError:
        return None
    if type(protocol).__name__ != "H11Protocol" or not hasattr(transport, "get_write_buffer_size"):
        return None
    if not isinstance(writer, asyncio.StreamWriter):
        return None
    return writer


def hypercorn_ws_closing(send: Any) -> Callable[[], bool]:
    """Whether a Close frame went either way on this WebSocket (wsproto's state, which
    Hypercorn updates when it sends or answers a Close, before the app hears of it)."""
    try:
        connection = send.__self__.connection  # hypercorn WSStream -> wsproto Connection
        open_state = type(connection.state).OPEN
    except AttributeError:
        return lambda: False
    return lambda: connection.state is not open_state


def sse_frames(batch: list[Event]) -> bytes:
    return b"".join(PING if event is HEARTBEAT else event.sse for event in batch)


class _SocketSink:
    """What both sinks share: the transport, whether it can take more, and a wake-up when it
    drained (only for congested sockets: a healthy one costs nothing here)."""

    __slots__ = ("transport", "writer", "_drain")

    def __init__(
        self, transport: asyncio.WriteTransport, writer: asyncio.StreamWriter | None = None
    ) -> None:
        self.transport = transport
        self.writer = writer
        self._drain: asyncio.Task[None] | None = None

    def closing(self) -> bool:
        return self.transport.is_closing()

    def congested(self) -> bool:
        return self.transport.get_write_buffer_size() > HIGH_WATER

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the transport's buffer fell below its low-water mark, so a
        backlog goes out at the speed of the socket instead of at the next push or tick."""
        if self._drain is None and self.writer is not None:
            self._drain = asyncio.get_running_loop().create_task(self._until_drained(callback))

    async def _until_drained(self, callback: Callable[[], None]) -> None:
        assert self.writer is not None
        try:
            while self.congested() and not self.transport.is_closing():
                await self.writer.drain()  # the protocol resumes writing below the low mark
                if self.congested():  # resumed, yet above our mark (other limits): back off
                    await asyncio.sleep(0.01)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._drain = None
        callback()

    def cancel(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None


class ChunkedSink(_SocketSink):
    """Writes SSE frames to a raw HTTP/1.1 socket, each event its own chunk.

    Each event's chunk is encoded once and shared by every stream (Event.sse_chunk keeps
    only the chunk, so a queued event holds one encoding for this transport). Building the
    chunk at write time instead cost a copy per delivery: +40% of the hub's time per
    subscriber in bench/hub_overhead.py."""

    __slots__ = ()

    def write(self, batch: list[Event]) -> None:
        if len(batch) == 1:
            event = batch[0]
            self.transport.write(PING_CHUNK if event is HEARTBEAT else event.sse_chunk)
        else:
            self.transport.write(
                b"".join(PING_CHUNK if event is HEARTBEAT else event.sse_chunk for event in batch)
            )

    def write_bytes(self, data: bytes) -> None:
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))


class WebSocketSink(_SocketSink):
    """Writes each event as one WebSocket text frame, encoded once per event; nothing once a
    Close frame went either way (RFC 6455 5.5.1: no data frame after a Close)."""

    __slots__ = ("_ws_closing",)

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        writer: asyncio.StreamWriter | None = None,
        ws_closing: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(transport, writer)
        self._ws_closing = ws_closing

    def closing(self) -> bool:
        return self.transport.is_closing() or self._ws_closing()

    def write(self, batch: list[Event]) -> None:  # after closing() said False (flush)
        frames = [event.ws_frame for event in batch if event is not HEARTBEAT]
        if frames:
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
