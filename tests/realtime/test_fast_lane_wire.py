"""The fast lane (web/fast_lane.py) on the wire, against real `rankpulse serve` processes, read
with a strict HTTP/1.1 parser: it serves plain GETs of /api/poll and /api/events (the
/metrics counter shows it did), shares keep-alive connections with requests Hypercorn serves,
copes with pipelining and heads split across segments, and every request it declines is
answered exactly as an instance without the lane (FAST_LANE=false) answers it."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable

import h11
import pytest

from ..helpers import lane_requests
from ..http_wire import read_response
from ..services import LiveServer

HOST = ("Host", "127.0.0.1")
# Headers whose values differ from one answer to the next whoever serves it.
VOLATILE = {b"date", b"content-length", b"retry-after"}


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.settimeout(20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _expect(conn: h11.Connection, method: str, target: str, *extra: tuple[str, str]) -> None:
    """Tell the client-side parser which request the next response answers."""
    if conn.our_state is h11.DONE:
        conn.start_next_cycle()
    conn.send(h11.Request(method=method, target=target, headers=[HOST, *extra]))
    conn.send(h11.EndOfMessage())


def _get(sock: socket.socket, conn: h11.Connection, target: str, *extra: tuple[str, str]) -> None:
    _expect(conn, "GET", target, *extra)
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in extra)]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


async def _read(sock: socket.socket, conn: h11.Connection) -> tuple[h11.Response, bytes]:
    return await asyncio.to_thread(read_response, sock, conn)


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


async def test_a_poll_then_a_post_then_a_poll_share_one_keep_alive_connection(
    shared_live_server: LiveServer,
) -> None:
    live_server = shared_live_server  # the lane's counts are read as differences
    token = live_server.token("viewer")
    before = lane_requests(live_server.url)
    poll = f"/api/poll?rooms=matches&access_token={token}"
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _get(sock, conn, poll)
        head, body = await _read(sock, conn)
        assert head.status_code == 200
        cursor = json.loads(body)["cursor"]
        # A POST with a body: Hypercorn's and Quart's, on the connection the lane just used.
        payload = json.dumps({"sub": "someone"}).encode()
        conn.start_next_cycle()
        request = h11.Request(
            method="POST",
            target="/api/dev/token",
            headers=[
                HOST,
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
            ],
        )
        sock.sendall(conn.send(request) + conn.send(h11.Data(data=payload)))
        sock.sendall(conn.send(h11.EndOfMessage()))
        posted, answer = await _read(sock, conn)
        assert posted.status_code == 200
        assert "access_token" in json.loads(answer)
        _get(sock, conn, f"{poll}&cursor={cursor}&timeout=0")
        again, body = await _read(sock, conn)
        assert again.status_code == 200
        assert json.loads(body) == {"events": [], "cursor": cursor}
    assert lane_requests(live_server.url) - before == 2


async def test_pipelined_requests_alternate_between_the_lane_and_hypercorn(
    shared_live_server: LiveServer,
) -> None:
    live_server = shared_live_server  # the lane's counts are read as differences
    token = live_server.token("viewer")
    poll = f"/api/poll?rooms=matches&access_token={token}&timeout=0"
    targets = [poll, "/healthz", poll, "/api/poll?rooms=nope", poll]
    before = lane_requests(live_server.url)
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % t.encode() for t in targets))
        answers = []
        for target in targets:
            _expect(conn, "GET", target)
            answers.append(await _read(sock, conn))
    statuses = [head.status_code for head, _ in answers]
    assert statuses == [200, 200, 200, 401, 200]
    cursors = {json.loads(answers[i][1])["cursor"] for i in (0, 2, 4)}
    assert len(cursors) == 1  # (nothing happened between them: the same position)
    # The first is the lane's; the bytes after it went to Hypercorn, whose h11 serves what it
    # holds (the rest of one segment) before the lane looks at new bytes again.
    assert 1 <= lane_requests(live_server.url) - before <= 3


async def test_a_head_split_byte_by_byte_is_served_by_the_lane(
    shared_live_server: LiveServer,
) -> None:
    live_server = shared_live_server  # the lane's counts are read as differences
    token = live_server.token("viewer")
    target = f"/api/poll?rooms=matches&access_token={token}&timeout=0"
    before = lane_requests(live_server.url)
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _expect(conn, "GET", target)
        for byte in f"GET {target} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode():
            sock.sendall(bytes([byte]))
            await asyncio.sleep(0.001)  # (pacing, so that the bytes travel as many segments)
        head, body = await _read(sock, conn)
        assert head.status_code == 200
        assert "cursor" in json.loads(body)
    assert lane_requests(live_server.url) - before == 1


async def test_an_event_stream_through_the_lane_then_a_request_on_its_connection(
    shared_live_server: LiveServer,
) -> None:
    live_server = shared_live_server  # the lane's counts are read as differences
    token = live_server.token("viewer", ttl=2)  # the stream ends when its token expires
    before = lane_requests(live_server.url, "/api/events")
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _get(sock, conn, f"/api/events?rooms=matches&access_token={token}")
        head, body = await _read(sock, conn)
        assert head.status_code == 200
        assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
        assert body.startswith(b"retry: ") and b"event: stream:open\n" in body
        _get(sock, conn, "/healthz")
        health, _ = await _read(sock, conn)
        assert health.status_code == 200
    assert lane_requests(live_server.url, "/api/events") - before == 1


async def test_a_poll_asked_to_close_through_the_lane_closes(
    shared_live_server: LiveServer,
) -> None:
    live_server = shared_live_server  # the lane's counts are read as differences
    token = live_server.token("viewer")
    before = lane_requests(live_server.url)
    with _connect(live_server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _get(sock, conn, f"/api/poll?rooms=matches&access_token={token}", ("Connection", "close"))
        head, _ = await _read(sock, conn)
        assert head.status_code == 200
        assert dict(head.headers)[b"connection"] == b"close"
        assert await asyncio.to_thread(_closed_by_server, sock)
    assert lane_requests(live_server.url) - before == 1


def _declined(token: str) -> list[tuple[str, bytes]]:
    poll = f"/api/poll?rooms=matches&access_token={token}&timeout=0".encode()
    return [
        ("HEAD", b"HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n" % poll),
        ("a body", b"GET %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab" % poll),
        (
            "chunked",
            b"GET %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % poll,
        ),
        ("Expect", b"GET %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n" % poll),
        ("no Host", b"GET %s HTTP/1.1\r\n\r\n" % poll),
        ("two Hosts", b"GET %s HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" % poll),
        ("obs-fold", b"GET %s HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n" % poll),
        ("bare LF", b"GET %s HTTP/1.1\nHost: x\n\n" % poll),
        ("bad name", b"GET %s HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n" % poll),
        ("HTTP/1.0", b"GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % poll),
        ("escaped path", b"GET /api/p%%6fll?%s HTTP/1.1\r\nHost: x\r\n\r\n" % poll.split(b"?")[1]),
        (
            "oversized head",
            b"GET %s HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % (poll, b"a" * 20_000),
        ),
        (
            "Upgrade",
            b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" % poll,
        ),
    ]


def _exchange(
    server: LiveServer, raw: bytes
) -> tuple[int | None, list[tuple[bytes, bytes]], tuple[str, ...]]:
    """What the server answers to `raw` (its first response: status, stable headers, body
    shape), read as bytes up to the answer's end, the server's close or a quiet spell."""
    with _connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(raw)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" not in received:
                continue
            if raw.startswith(b"HEAD "):
                # A HEAD answer has no body whatever its Content-Length: it is whole at the
                # end of its head, and a quiet half second (not 5 s) shows nothing follows.
                sock.settimeout(0.5)
            elif _complete(received):
                break
    if not received:
        return None, [], ()
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = sorted(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in lines[1:])
        if name.strip().lower() not in VOLATILE
    )
    shape: tuple[str, ...] = ()
    if body.startswith(b"{"):  # a JSON answer: its fields (cursors differ between instances)
        shape = tuple(sorted(json.loads(body.split(b"\r\n")[0])))
    return status, headers, shape


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 100"):
        return _complete(body) if body else False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is None or len(body) >= int(length.group(1))


async def test_declined_requests_are_answered_as_without_the_lane(
    shared_servers: Callable[..., LiveServer],
) -> None:
    with_lane = shared_servers()  # (its lane's count is read as a difference)
    without = shared_servers(env={"FAST_LANE": "false"})  # (never counts: the lane is off)
    token = with_lane.token("viewer")  # (each instance signs its own development tokens)
    other_token = without.token("viewer")
    before = lane_requests(with_lane.url)
    for (case, raw), (_, other_raw) in zip(_declined(token), _declined(other_token), strict=True):
        lane_answer = await asyncio.to_thread(_exchange, with_lane, raw)
        plain_answer = await asyncio.to_thread(_exchange, without, other_raw)
        assert lane_answer == plain_answer, case
    assert lane_requests(with_lane.url) == before  # none of them took the lane
    assert lane_requests(without.url) == 0


@pytest.mark.parametrize("fast_lane", ["false"])
async def test_with_the_lane_off_polls_and_streams_still_work(
    shared_servers: Callable[..., LiveServer], fast_lane: str
) -> None:
    server = shared_servers(env={"FAST_LANE": fast_lane})
    token = server.token("viewer", ttl=2)
    with _connect(server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _get(sock, conn, f"/api/poll?rooms=matches&access_token={token}&timeout=0")
        head, body = await _read(sock, conn)
        assert head.status_code == 200 and "cursor" in json.loads(body)
        _get(sock, conn, f"/api/events?rooms=matches&access_token={token}")
        head, body = await _read(sock, conn)
        assert head.status_code == 200 and b"event: stream:open\n" in body
    assert lane_requests(server.url) == 0
    assert lane_requests(server.url, "/api/events") == 0


async def test_lane_requests_are_in_the_access_log(live_servers: Callable[..., LiveServer]) -> None:
    server = live_servers(args=("--access-log",))
    token = server.token("viewer")
    before = lane_requests(server.url)
    with _connect(server) as sock:
        conn = h11.Connection(h11.CLIENT)
        _get(sock, conn, f"/api/poll?rooms=matches&access_token={token}&timeout=0")
        head, _ = await _read(sock, conn)
        assert head.status_code == 200
    assert lane_requests(server.url) - before == 1
    # One line per request, without the query string (no token in the log); the line of a
    # request is written when its answer is sent, before the /metrics read above.
    lines = [line for line in server.log().splitlines() if '"GET /api/poll 1.1" 200' in line]
    assert len(lines) == 1, server.log()
    assert token not in server.log()
