"""A whole small HTTP/1.1 response written straight to Hypercorn's socket.

A long-poll answer through `send` costs two ASGI messages, three h11 events (each header
validated) and three locked write-and-drain coroutines in Hypercorn: under a crowd of pollers
that was most of an instance's time (profiled: app_send and h11 at about 75% of the CPU). Here
the answer's bytes are written in one `transport.write`, and h11's and Hypercorn's state is
moved on exactly as if they had sent it (the response done, the connection reused or closed,
the access log written), so the next request on the keep-alive connection is served as usual.
Anything else (HTTP/2, another server, the test client, a congested socket) gets None and is
answered through `send`.
"""

from __future__ import annotations

import email.utils
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import h11

from .raw_socket import HIGH_WATER

try:  # Hypercorn's internals, as raw_socket.py uses them; without them: the `send` path
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.http_stream import ASGIHTTPState
except ImportError:  # pragma: no cover
    StreamClosed = ASGIHTTPState = None  # type: ignore[assignment,misc]

Headers = list[tuple[bytes, bytes]]
Respond = Callable[[int, Headers, bytes], Awaitable[None]]


_date_second = 0
_date_value = b""


def http_date() -> bytes:
    """The Date header's value for now (RFC 9110 6.6.1: an origin server with a clock sends
    one in its 2xx and 4xx), made once a second."""
    global _date_second, _date_value
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_value = now, email.utils.formatdate(now, usegmt=True).encode()
    return _date_value


# Hypercorn's response headers but the Date (Server, Alt-Svc), per config (a server's few).
_undated: dict[int, list[tuple[bytes, bytes]]] = {}


def server_headers(config: Any) -> list[tuple[bytes, bytes]]:
    """Hypercorn's own response headers, config.response_headers("h11"), with the Date of
    http_date (made once a second, not formatted per response)."""
    undated = _undated.get(id(config))
    if undated is None:
        headers = config.response_headers("h11")
        undated = _undated[id(config)] = [(n, v) for n, v in headers if n != b"date"]
    if config.include_date_header:
        return [(b"date", http_date()), *undated]
    return undated


def encode_response(status: int, headers: Headers, body: bytes, *, close: bool) -> bytes:
    """The bytes of a complete HTTP/1.1 response with a Content-Length and a Date."""
    lines = [b"HTTP/1.1 %d \r\n" % status, b"date: " + http_date() + b"\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(b"content-length: %d\r\n" % len(body))
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class SharedResponses:
    """Whole responses of one status and header set, encoded once per body: a crowd of
    pollers given the same answer body is written the same bytes object (the keep-alive
    form; the rare `connection: close` one is encoded each time)."""

    def __init__(self, status: int, headers: Headers, entries: int = 64) -> None:
        self.status = status
        self.headers = headers
        self._entries = entries
        # body -> (its Date, the response): encoded again when the second changed
        self._encoded: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()

    def get(self, body: bytes, *, close: bool) -> bytes:
        if close:
            return encode_response(self.status, self.headers, body, close=True)
        date = http_date()
        cached = self._encoded.get(body)
        if cached is not None and cached[0] == date:
            return cached[1]
        encoded = encode_response(self.status, self.headers, body, close=False)
        self._encoded[body] = (date, encoded)
        self._encoded.move_to_end(body)
        if len(self._encoded) > self._entries:
            self._encoded.popitem(last=False)
        return encoded


def hypercorn_h11_responder(
    send: Any, scope: dict[str, Any], shared: SharedResponses | None = None
) -> Respond | None:
    """A function that writes a complete response (status, headers, body) to the socket, or
    None where that is not possible. With `shared`, a response of its status and headers
    (the same list) is taken from there."""
    if StreamClosed is None or scope.get("http_version") != "1.1":
        return None
    try:
        stream = send.__self__  # hypercorn.protocol.http_stream.HTTPStream
        protocol = stream.send.__self__  # hypercorn.protocol.h11.H11Protocol
        connection = protocol.connection
        transport = protocol.send.__self__.writer.transport
        state = connection._cstate
    except AttributeError:
        return None
    if (
        type(protocol).__name__ != "H11Protocol"
        or type(connection) is not h11.Connection
        or stream.closed  # the client left while the poll waited: nothing to write
        or stream.state is not ASGIHTTPState.REQUEST
        or transport.is_closing()
        or connection.our_state is not h11.SEND_RESPONSE
        or transport.get_write_buffer_size() > HIGH_WATER
    ):
        return None

    async def respond(status: int, headers: Headers, body: bytes) -> None:
        if protocol.keep_alive_requests >= protocol.config.keep_alive_max_requests:
            state.process_keep_alive_disabled()
        close = not state.keep_alive
        if shared is not None and shared.status == status and shared.headers is headers:
            data = shared.get(body, close=close)
        else:
            data = encode_response(status, headers, body, close=close)
        # What h11 would have done on sending Response, Data and EndOfMessage.
        old_states = dict(state.states)
        state.process_event(h11.SERVER, h11.Response)
        state.process_event(h11.SERVER, h11.EndOfMessage)
        connection._respond_to_state_changes(old_states)
        transport.write(data)
        # What Hypercorn would have done: the stream closed, logged, the connection recycled.
        stream.state = ASGIHTTPState.CLOSED
        await stream.config.log.access(
            stream.scope, {"status": status, "headers": headers}, time.time() - stream.start_time
        )
        await stream.send(StreamClosed(stream_id=stream.stream_id))

    return respond
