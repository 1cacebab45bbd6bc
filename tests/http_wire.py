"""Reading a server's raw HTTP/1.1 answers with a strict parser (h11), for wire tests."""

from __future__ import annotations

import asyncio
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


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    """A response's status and headers (names lowercased) from an asyncio stream."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One GET on a keep-alive connection: status, headers, body. The answer must be framed
    by Content-Length (never chunked, never closed to end it)."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    status, headers = await read_head(reader)
    assert b"transfer-encoding" not in headers, headers
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 30)
    return status, headers, body


async def chunks_to_the_end(reader: asyncio.StreamReader) -> bytes:
    """The chunks of a chunked body until its last (zero) chunk, joined: an SSE stream's text."""
    text = b""
    while True:
        size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 30), 16)
        chunk = await asyncio.wait_for(reader.readexactly(size + 2), 30)
        if size == 0:
            return text
        text += chunk[:-2]
