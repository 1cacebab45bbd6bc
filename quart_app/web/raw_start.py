"""The head and first chunk of an SSE response, written straight to Hypercorn's socket.

A reconnect storm is thousands of streams opened at once, and each cost two `send` calls
through Hypercorn (HTTPStream -> H11Protocol -> h11 -> TCPServer, a lock and a drain each):
profiled at about half of an instance's time while streams were being opened. Here h11
frames the response exactly as it would (so its state, and Hypercorn's, move on as if they
had sent it: the stream's later chunks and its end go through either path), and the bytes
go out in one `transport.write`. Anything else (HTTP/2, another server, the test client)
gets False and is served through `send`.
"""

from __future__ import annotations

from typing import Any

import h11

try:  # Hypercorn's internals, as raw_socket.py uses them
    from hypercorn.protocol.http_stream import ASGIHTTPState
except ImportError:  # pragma: no cover
    ASGIHTTPState = None  # type: ignore[assignment,misc]


def hypercorn_start_stream(
    send: Any, scope: dict[str, Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> bool:
    """Write the response head and `body` as its first chunk; False: use `send` instead."""
    if ASGIHTTPState is None or scope.get("http_version") != "1.1":
        return False
    try:
        stream = send.__self__  # hypercorn.protocol.http_stream.HTTPStream
        protocol = stream.send.__self__  # hypercorn.protocol.h11.H11Protocol
        connection = protocol.connection
        transport = protocol.send.__self__.writer.transport
    except AttributeError:
        return False
    if (
        type(protocol).__name__ != "H11Protocol"
        or type(connection) is not h11.Connection
        or stream.state is not ASGIHTTPState.REQUEST
        or connection.our_state is not h11.SEND_RESPONSE
    ):
        return False
    # What HTTPStream.app_send and H11Protocol.stream_send would have sent.
    head = [*headers, *protocol.config.response_headers("h11")]
    if protocol.keep_alive_requests >= protocol.config.keep_alive_max_requests:
        head.append((b"connection", b"close"))
    data = connection.send(h11.Response(status_code=status, headers=head))
    if body:
        data += connection.send(h11.Data(data=body))
    transport.write(data)
    stream.response = {"type": "http.response.start", "status": status, "headers": headers}
    stream.state = ASGIHTTPState.RESPONSE
    return True
