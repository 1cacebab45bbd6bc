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
from typing import Any

from ..engine.base import Event
from ..engine.hub import HEARTBEAT

# Past this many bytes waiting in the transport, the hub leaves events queued (where the
# connection's queue limit judges the client slow) instead of buffering without bound.
HIGH_WATER = 256 * 1024
PING = b": ping\n\n"
PING_CHUNK = b"%x\r\n%b\r\n" % (len(PING), PING)


def hypercorn_h11_transport(send: Any, scope: dict[str, Any]) -> asyncio.WriteTransport | None:
    if scope["type"] == "http" and scope.get("http_version") != "1.1":
        return None  # h11 frames the body in chunks only for HTTP/1.1 peers
    try:
        stream = send.__self__  # hypercorn.protocol: HTTPStream or WSStream
        protocol = stream.send.__self__  # hypercorn.protocol.h11.H11Protocol
        server = protocol.send.__self__  # hypercorn.asyncio.tcp_server.TCPServer
        transport = server.writer.transport
    except AttributeError:
        return None
    if type(protocol).__name__ != "H11Protocol" or not hasattr(transport, "get_write_buffer_size"):
        return None
    return transport  # type: ignore[no-any-return]


def sse_frames(batch: list[Event]) -> bytes:
    return b"".join(PING if event is HEARTBEAT else event.sse for event in batch)


class _SocketSink:
    """What both sinks share: the transport, and whether it can take more."""

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport

    def closing(self) -> bool:
        return self.transport.is_closing()

    def congested(self) -> bool:
        return self.transport.get_write_buffer_size() > HIGH_WATER


class ChunkedSink(_SocketSink):
    """Writes SSE frames to a raw HTTP/1.1 socket, each event its own chunk."""

    __slots__ = ()

    def write(self, batch: list[Event]) -> None:
        # Each event's chunk is encoded once and shared by every stream.
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
    """Writes each event as one WebSocket text frame, encoded once per event."""

    __slots__ = ()

    def write(self, batch: list[Event]) -> None:
        frames = [event.ws_frame for event in batch if event is not HEARTBEAT]
        if frames:
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
