"""Connections that start without Hypercorn (web/lane_front.py), against a real `rankpulse
serve` process and raw sockets: what the lane serves is answered on them; the first request
the lane does not serve makes the connection Hypercorn's, with every byte sent so far, and
lane requests after it are still answered (by the lane Hypercorn's connection has)."""

from __future__ import annotations

import asyncio
import json
import socket

from ..http_wire import exchange, read_head
from ..services import LiveServer
from .test_lane_streams import _lane_requests


def _poll(server: LiveServer, cursor: str | None = None) -> str:
    after = f"&cursor={cursor}" if cursor else ""
    return f"/api/poll?rooms=matches&timeout=0&access_token={server.token('viewer')}{after}"


def _publish_request(server: LiveServer, text: str) -> tuple[bytes, bytes]:
    """A publish's head and body (a request the lane declines: a POST with a body)."""
    body = json.dumps({"room": "matches", "event": "announcement", "data": {"text": text}})
    head = (
        "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {server.token('ops', 'admin')}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode(), body.encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, headers = await read_head(reader)
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 30)
    return status, body


async def test_a_connection_moves_to_hypercorn_at_a_declined_request_and_keeps_the_lane(
    shared_live_server: LiveServer,
) -> None:
    server = shared_live_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        before = _lane_requests(server)
        status, _, body = await exchange(reader, writer, _poll(server))
        assert status == 200
        cursor = json.loads(body)["cursor"]

        # A publish on the same connection, its head and body in two writes: Hypercorn's.
        head, publish_body = _publish_request(server, "handed over")
        writer.write(head)
        await writer.drain()
        writer.write(publish_body)
        status, answer = await _answer(reader)
        assert status == 202, answer

        # Then a poll again, on the same connection: answered, by the lane, with the event.
        status, _, body = await exchange(reader, writer, _poll(server, cursor))
        assert status == 200
        events = json.loads(body)["events"]
        assert [event["data"] for event in events] == [{"text": "handed over"}]
        assert _lane_requests(server) - before >= 2  # (both polls)
    finally:
        writer.close()


async def test_requests_pipelined_behind_a_lane_poll_are_all_answered_in_order(
    shared_live_server: LiveServer,
) -> None:
    server = shared_live_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        head, publish_body = _publish_request(server, "pipelined")
        poll = f"GET {_poll(server)} HTTP/1.1\r\nHost: test\r\n\r\n".encode()
        readyz = b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n"
        writer.write(poll + head + publish_body + readyz + poll)  # (one write, one segment)
        statuses = [(await _answer(reader))[0] for _ in range(4)]
        assert statuses == [200, 202, 200, 200]
    finally:
        writer.close()


async def test_a_poll_sent_before_the_client_half_closes_is_still_answered(
    shared_live_server: LiveServer,
) -> None:
    server = shared_live_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(f"GET {_poll(server)} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        writer.write_eof()  # (shutdown(SHUT_WR): "nothing more from me", still reading)
        status, body = await _answer(reader)
        assert status == 200 and "cursor" in json.loads(body)
        assert await asyncio.wait_for(reader.read(), 30) == b""  # then the server closes
    finally:
        writer.close()


async def test_a_head_cut_short_by_the_client_gets_hypercorns_answer(
    shared_live_server: LiveServer,
) -> None:
    # The first bytes look like a lane request; the client then closes its side before the
    # head ends. Hypercorn judges it, as it does without the lane: 400, and the close.
    with socket.create_connection(("127.0.0.1", shared_live_server.port), timeout=30) as sock:
        sock.sendall(b"GET /api/poll?rooms=matches HTTP/1.1\r\nHost: te")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 "), received


async def test_a_stream_opened_after_the_connection_moved_to_hypercorn_is_served(
    shared_live_server: LiveServer,
) -> None:
    server = shared_live_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await _answer(reader))[0] == 200
        token = server.token("viewer")
        writer.write(
            f"GET /api/events?rooms=matches&access_token={token} HTTP/1.1\r\n"
            "Host: test\r\n\r\n".encode()
        )
        status, headers = await read_head(reader)
        assert status == 200 and headers[b"content-type"].startswith(b"text/event-stream")
        size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 30), 16)
        first = await asyncio.wait_for(reader.readexactly(size), 30)
        assert b"event: stream:open" in first
    finally:
        writer.close()
