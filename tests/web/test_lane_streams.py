"""SSE streams served by the fast lane itself (web/fast_lane.py `_open_stream`, with
web/lane_stream.py's `receive` and `send`; h11 never leaves IDLE), against real `rankpulse
serve` processes and raw sockets: a problem is framed and worded as without the lane and the
connection kept, a connection serves the next request once its stream ended, and a request
sent during a stream is not served (the connection closes after the stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from ..helpers import lane_requests
from ..services import LiveServer

Answer = tuple[int, dict[bytes, bytes], bytes]


def _lane_requests(server: LiveServer) -> int:
    """Streams and polls the lane took."""
    return lane_requests(server.url, "/api/events") + lane_requests(server.url, "/api/poll")


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> Answer:
    """One GET of a whole answer on a keep-alive connection, framed by Content-Length."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    status, headers = await _head(reader)
    assert b"transfer-encoding" not in headers, headers
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 30)
    return status, headers, body


async def _stream_to_its_end(reader: asyncio.StreamReader) -> bytes:
    """The chunks of an SSE response until its last (zero) chunk: the stream's text."""
    text = b""
    while True:
        size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 30), 16)
        chunk = await asyncio.wait_for(reader.readexactly(size + 2), 30)
        if size == 0:
            return text
        text += chunk[:-2]


async def test_sse_problems_from_the_lane_match_hypercorns_and_keep_the_connection(
    shared_live_server: LiveServer, live_servers: Callable[..., LiveServer]
) -> None:
    without_lane = live_servers(env={"FAST_LANE": "false"})
    answers: dict[str, list[Answer]] = {}
    for name, server in (("lane", shared_live_server), ("hypercorn", without_lane)):
        token = server.token("viewer")
        problems = [
            "/api/events?rooms=matches",  # no token: 401
            f"/api/events?access_token={token}",  # no rooms: 400
            f"/api/events?rooms=matches&top=0&access_token={token}",  # a bad top: 400
            "/api/events?rooms=matches&access_token=not-a-token",  # 401
        ]
        before = _lane_requests(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            answers[name] = [await _exchange(reader, writer, target) for target in problems]
            # ... and the same connection still serves a poll.
            status, _, body = await _exchange(
                reader, writer, f"/api/poll?rooms=matches&timeout=0&access_token={token}"
            )
            assert status == 200 and "cursor" in json.loads(body)
        finally:
            writer.close()
        taken = _lane_requests(server) - before
        assert taken == (len(problems) + 1 if name == "lane" else 0), (name, taken)
    for (status, headers, body), (status_h, headers_h, body_h) in zip(
        answers["lane"], answers["hypercorn"], strict=True
    ):
        assert status == status_h and status in (400, 401)
        assert headers[b"content-type"] == headers_h[b"content-type"] == b"application/problem+json"
        assert headers.get(b"www-authenticate") == headers_h.get(b"www-authenticate")
        assert json.loads(body) == json.loads(body_h)


async def test_a_connection_serves_a_poll_once_its_stream_ended(
    shared_live_server: LiveServer,
) -> None:
    server = shared_live_server
    before = _lane_requests(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # A token that expires in 2 s: the stream ends then (PROTOCOL 3.1), and the response
        # with it; the connection stays for the next request.
        expiring = server.token("viewer", ttl=2)
        writer.write(
            f"GET /api/events?rooms=matches&access_token={expiring} HTTP/1.1\r\n"
            "Host: test\r\n\r\n".encode()
        )
        status, headers = await _head(reader)
        assert status == 200 and headers[b"transfer-encoding"] == b"chunked"
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert b"date" in headers  # (Hypercorn's own headers, as without the lane)
        text = await _stream_to_its_end(reader)
        assert b"event: stream:open" in text
        status, _, body = await _exchange(
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
    server = shared_live_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        expiring = server.token("viewer", ttl=2)
        writer.write(
            f"GET /api/events?rooms=matches&access_token={expiring} HTTP/1.1\r\n"
            "Host: test\r\n\r\n".encode()
        )
        status, _ = await _head(reader)
        assert status == 200
        # Pipelined behind the stream: a client that does this gets no answer to it, but a
        # closed connection (its HTTP client retries elsewhere), never an answer spliced
        # into the stream.
        writer.write(b"GET /api/poll?rooms=matches&timeout=0 HTTP/1.1\r\nHost: test\r\n\r\n")
        text = await _stream_to_its_end(reader)
        assert b"HTTP/1.1" not in text
        assert await asyncio.wait_for(reader.read(), 30) == b""
    finally:
        writer.close()
