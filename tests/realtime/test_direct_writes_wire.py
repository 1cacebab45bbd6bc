"""HTTP/1.1 stays correct where we write to Hypercorn's socket ourselves (issue 9/10): the head
of an SSE stream and whole long-poll answers, read with a strict HTTP/1.1 parser (h11) on raw
keep-alive sockets against a real `rankpulse serve`: chunked framing and its end, the
connection reused after it, `Connection: close` honoured, pipelined polls answered in order."""

from __future__ import annotations

import asyncio
import json
import socket

import h11
import pytest

from ..http_wire import read_response
from ..services import LiveServer

HOST = ("Host", "127.0.0.1")


@pytest.fixture(name="live_server")
def _live_server(shared_live_server: LiveServer) -> LiveServer:
    """Every test here only reads, on connections of its own (and the pipelined-polls test
    allows a cursor past its own): the module's one instance (conftest.shared_servers)."""
    return shared_live_server


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.settimeout(20)
    return sock


def _send(sock: socket.socket, conn: h11.Connection, target: str, *extra: tuple[str, str]) -> None:
    sock.sendall(conn.send(h11.Request(method="GET", target=target, headers=[HOST, *extra])))
    sock.sendall(conn.send(h11.EndOfMessage()))


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def _headers(head: h11.Response) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in head.headers}


async def test_an_event_stream_ends_as_valid_chunked_http_and_its_connection_is_reused(
    live_server: LiveServer,
) -> None:
    token = live_server.token("viewer", ttl=2)  # the stream ends when its token expires
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _send(sock, conn, f"/api/events?rooms=matches&access_token={token}")
        head, body = await asyncio.to_thread(read_response, sock, conn)
        assert head.status_code == 200
        headers = _headers(head)
        assert headers["transfer-encoding"] == "chunked"
        assert headers["content-type"].startswith("text/event-stream")
        assert "connection" not in headers
        assert body.startswith(b"retry: ") and b"event: stream:open\n" in body
        conn.start_next_cycle()
        _send(sock, conn, "/healthz")  # the same keep-alive connection
        health, _ = await asyncio.to_thread(read_response, sock, conn)
        assert health.status_code == 200


async def test_an_event_stream_asked_to_close_says_so_and_closes(live_server: LiveServer) -> None:
    token = live_server.token("viewer", ttl=2)
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        target = f"/api/events?rooms=matches&access_token={token}"
        _send(sock, conn, target, ("Connection", "close"))
        head, body = await asyncio.to_thread(read_response, sock, conn)
        assert head.status_code == 200
        assert _headers(head)["connection"] == "close"
        assert b"event: stream:open\n" in body
        assert await asyncio.to_thread(_closed_by_server, sock)


async def test_pipelined_polls_are_answered_in_order_on_one_connection(
    live_server: LiveServer,
) -> None:
    token = live_server.token("viewer")
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _send(sock, conn, f"/api/poll?rooms=matches&access_token={token}")
        first, body = await asyncio.to_thread(read_response, sock, conn)
        assert first.status_code == 200
        cursor = json.loads(body)["cursor"]
        # Two requests in one write: the second is read while the first is answered.
        targets = (
            f"/api/poll?rooms=matches&access_token={token}&cursor={cursor}&timeout=0",
            "/api/poll?rooms=nope",
        )
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % t.encode() for t in targets))
        answers = []
        for target in targets:  # the parser follows the requests sent above
            conn.start_next_cycle()
            conn.send(h11.Request(method="GET", target=target, headers=[HOST]))
            conn.send(h11.EndOfMessage())
            answers.append(await asyncio.to_thread(read_response, sock, conn))
        (answer, body), (refused, problem) = answers
        assert answer.status_code == 200
        assert int(_headers(answer)["content-length"]) == len(body)
        # No event of its rooms: empty, with a cursor at or past its own (the first poll's
        # presence may have logged `player:online` in a room it did not ask for: PROTOCOL 3.2
        # lets the cursor pass other rooms' events).
        answered = json.loads(body)
        assert answered["events"] == []
        epoch, seq = cursor.split(".")
        answered_epoch, answered_seq = answered["cursor"].split(".")
        assert answered_epoch == epoch and int(answered_seq) >= int(seq)
        assert refused.status_code == 401  # the error path (through Hypercorn) right after
        assert json.loads(problem)["status"] == refused.status_code


async def test_a_poll_asked_to_close_says_so_and_closes(live_server: LiveServer) -> None:
    token = live_server.token("viewer")
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _send(sock, conn, f"/api/poll?rooms=matches&access_token={token}", ("Connection", "close"))
        head, body = await asyncio.to_thread(read_response, sock, conn)
        assert head.status_code == 200
        assert _headers(head)["connection"] == "close"
        assert "cursor" in json.loads(body)
        assert await asyncio.to_thread(_closed_by_server, sock)
