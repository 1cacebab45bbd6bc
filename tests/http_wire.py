"""Reading a server's raw HTTP/1.1 answers with a strict parser (h11), for wire tests."""

from __future__ import annotations

import socket

import h11


def read_response(sock: socket.socket, conn: h11.Connection) -> tuple[h11.Response, bytes]:
    """One whole response (h11 knows a HEAD response has no body); raises on bytes that are
    not a valid HTTP/1.1 response here, such as a chunk left over from the previous one."""
    head: h11.Response | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, body
        else:
            raise AssertionError(f"no whole response: {event!r} after {head!r} {body[:200]!r}")
