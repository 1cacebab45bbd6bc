"""SSE streams served by the fast lane itself (web/fast_lane.py `_open_stream`, with
web/lane_stream.py's `receive` and `send`; h11 never leaves IDLE), against real `rankpulse
serve` processes and raw sockets: a connection serves the next request once its stream ended,
and a request sent during a stream is not served (the connection closes after the stream).
Refusals: tests/web/test_lane_keepalive.py."""

from __future__ import annotations

import asyncio
import json

from ..helpers import lane_requests
from ..http_wire import chunks_to_the_end, exchange, read_head
from ..services import LiveServer


def _lane_requests(server: LiveServer) -> int:
    """Streams and polls the lane took."""
    return lane_requests(server.url, "/api/events") + lane_requests(server.url, "/api/poll")


async def _expiring_stream(
    server: LiveServer,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[bytes, bytes]]:
    """An SSE stream on a new connection, whose token expires in 2 s: the stream, and its
    response, end then (PROTOCOL 3.1). The connection and the response's headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    expiring = server.token("viewer", ttl=2)
    writer.write(
        f"GET /api/events?rooms=matches&access_token={expiring} HTTP/1.1\r\n"
        "Host: test\r\n\r\n".encode()
    )
    status, headers = await read_head(reader)
    assert status == 200, headers
    return reader, writer, headers


async def test_a_connection_serves_a_poll_once_its_stream_ended(
    shared_live_server: LiveServer,
) -> None:
    server = shared_live_server
    before = _lane_requests(server)
    reader, writer, headers = await _expiring_stream(server)
    try:
        assert headers[b"transfer-encoding"] == b"chunked"
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert b"date" in headers  # (Hypercorn's own headers, as without the lane)
        text = await chunks_to_the_end(reader)
        assert b"event: stream:open" in text
        # The stream ended with its token; the connection stays for the next request.
        status, _, body = await exchange(
            reader,
            writer,
            f"/api/poll?rooms=matches&timeout=0&access_token={server.token('viewer')}",
        )
        assert status == 200 and "cursor" in json.loads(body)
        assert _lane_requests(server) - before >= 2  # the stream and the poll
    finally:
        writer.close()


async def test_a_request_sent_during_a_stream_is_not_served_and_the_connection_closes_after_it(
    shared_live_server: LiveServer,
) -> None:
    reader, writer, _ = await _expiring_stream(shared_live_server)
    try:
        # Pipelined behind the stream: a client that does this gets no answer to it, but a
        # closed connection (its HTTP client retries elsewhere), never an answer spliced
        # into the stream.
        writer.write(b"GET /api/poll?rooms=matches&timeout=0 HTTP/1.1\r\nHost: test\r\n\r\n")
        text = await chunks_to_the_end(reader)
        assert b"HTTP/1.1" not in text
        assert await asyncio.wait_for(reader.read(), 30) == b""
    finally:
        writer.close()
