"""The head and first chunk of an SSE response, written straight to Hypercorn's socket.

A reconnect storm is thousands of streams opened at once, and each cost two `send` calls
through Hypercorn (HTTPStream -> H11Protocol -> h11 -> TCPServer, a lock and a drain each):
profiled at about half of an instance's time while streams were being opened. Here the
response head is written as h11 would frame it (chunked, `connection: close` where h11 would
add it), and h11's and Hypercorn's state move on as if they had sent it (so the stream's later
chunks and its end go through either path); the bytes go out in one `transport.write`.
h11 itself is not asked to frame the head: its header validation was, after the first
change, still the largest single cost of a new stream (a storm's profile: 1.1 ms of 4.5 under
cProfile). Anything else (HTTP/2, another server, the test client) gets False and is served
through `send`.
"""

from __future__ import annotations

from typing import Any

import h11

from .raw_response import server_headers

try:  # Hypercorn's internals, as raw_socket.py uses them
    from hypercorn.protocol.http_stream import ASGIHTTPState
except ImportError:  # pragma: no cover
    ASGIHTTPState = None  # type: ignore[assignment,misc]

# Drives h11's state machine into sending a chunked body (its writer for the stream's end);
# validated once here instead of once per stream.
_CHUNKED = h11.Response(status_code=200, headers=[(b"transfer-encoding", b"chunked")])


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
    if connection._request_method != b"GET" or connection.their_http_version != b"1.1":
        return False  # (a HEAD has no body; an HTTP/1.0 peer gets no chunks)
    # What HTTPStream.app_send and H11Protocol.stream_send would have sent.
    state = connection._cstate
    if protocol.keep_alive_requests >= protocol.config.keep_alive_max_requests:
        state.process_keep_alive_disabled()  # (Hypercorn's `connection: close`)
    lines = [b"HTTP/1.1 %d \r\n" % status]
    for name, value in (*headers, *server_headers(protocol.config)):
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"transfer-encoding: chunked\r\n")
    if not state.keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if body:
        lines.append(b"%x\r\n%b\r\n" % (len(body), body))
    connection._process_event(h11.SERVER, _CHUNKED)
    transport.write(b"".join(lines))
    stream.response = {"type": "http.response.start", "status": status, "headers": headers}
    stream.state = ASGIHTTPState.RESPONSE
    return True
