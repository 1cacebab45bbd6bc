"""PROTOCOL 7 on the wire: an answer sent while the request's body is still arriving (a 413 for
a body over 1 MiB, a 415 answered before reading) reaches the client, every time, instead of a
connection reset; and the lingering close that makes it so (web/hypercorn_fast.py) is bounded:
a client that keeps trickling bytes is cut after LINGER_SECONDS, and SIGTERM still exits within
DRAIN_SECONDS + 5 s with such a client connected. Real `rankpulse serve` processes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable

import h11
import httpx
import pytest

from ..http_wire import read_response
from ..services import LiveServer

SECRET = "lingering-close-secret-0123456789"
MIB = 1024 * 1024
RUNS = 5


@pytest.fixture(name="server")
def _server(shared_servers: Callable[..., LiveServer]) -> LiveServer:
    """For the tests that only send requests and read the answers (refusals): one instance
    for the module (conftest.shared_servers); those that set LINGER_SECONDS or SIGTERM it
    start their own."""
    return shared_servers(env={"JWT_SECRET": SECRET})


def _json_array(size: int) -> bytes:
    """A valid JSON body of `size` bytes (the size, not the syntax, is what is refused)."""
    return b"[" + b"0," * ((size - 3) // 2) + b"0" * (1 + (size - 3) % 2) + b"]"


def _writer_headers(server: LiveServer, scope: str = "matches:write") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {server.token('writer', scope)}",
        "Content-Type": "application/json",
    }


async def _answers(
    server: LiveServer, path: str, headers: dict[str, str], body: bytes, *, chunked: bool = False
) -> list[int | str]:
    """What RUNS clients, each on a new connection sending the body in one go (no Expect:
    100-continue, as most HTTP libraries do), were answered: a status, or the transport error."""

    async def pieces() -> AsyncIterator[bytes]:  # no Content-Length: chunked on the wire
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    answers: list[int | str] = []
    for _ in range(RUNS):
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            try:
                response = await http.post(
                    path, headers=headers, content=pieces() if chunked else body
                )
            except httpx.TransportError as exc:
                answers.append(type(exc).__name__)
                continue
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == response.status_code
            answers.append(response.status_code)
    return answers


@pytest.mark.parametrize(
    "size", [MIB + 1024, 4 * MIB, 16 * MIB], ids=["1MiB+1KiB", "4MiB", "16MiB"]
)
async def test_a_body_over_the_limit_gets_its_413_every_time(server: LiveServer, size: int) -> None:
    answers = await _answers(server, "/api/matches", _writer_headers(server), _json_array(size))
    assert answers == [413] * RUNS, answers


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_the_raw_result_route_answers_a_2_mib_body_413(
    server: LiveServer, chunked: bool
) -> None:
    """POST /api/matches/{id}/result is served past Quart (web/result_route.py) when it can:
    a body over its 64 KiB goes to Quart, whose 413 must reach the client like any other."""
    answers = await _answers(
        server,
        "/api/matches/m-413/result",
        _writer_headers(server),
        _json_array(2 * MIB),
        chunked=chunked,
    )
    assert answers == [413] * RUNS, answers


async def test_publish_answers_a_2_mib_body_413(server: LiveServer) -> None:
    body = json.dumps(
        {"room": "matches", "event": "announcement", "data": {"blob": "x" * (2 * MIB)}}
    ).encode()
    answers = await _answers(server, "/api/publish", _writer_headers(server, "admin"), body)
    assert answers == [413] * RUNS, answers


async def test_a_wrong_content_type_answered_before_the_body_gets_its_415(
    server: LiveServer,
) -> None:
    """The 415 is answered before a byte of the body is read: the same early answer."""
    headers = {**_writer_headers(server), "Content-Type": "text/plain"}
    answers = await _answers(server, "/api/matches", headers, b"x" * (MIB - 1024))
    assert answers == [415] * RUNS, answers


def _start_slow_upload(server: LiveServer) -> tuple[socket.socket, float]:
    """A client that announces 4 MiB, sends 64 KiB, reads its 413, and then sees the server's
    FIN at once (the answer is whole and the server writes no more). Returns the socket, still
    open for sending, and when the 413 arrived."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        "POST /api/matches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token('writer', 'matches:write')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {4 * MIB}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"[" + b"0," * 32 * 1024)
    response, _ = read_response(sock, h11.Connection(h11.CLIENT))
    answered = time.monotonic()
    assert response.status_code == 413
    assert sock.recv(65536) == b"", "the server should shut its side after the answer (FIN)"
    return sock, answered


def _trickle_until_cut(sock: socket.socket, limit: float) -> float:
    """Send a byte every 50 ms (a slow-loris client) until the server's reset makes a send
    fail; the seconds that took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            sock.send(b"0")
        except OSError:  # ECONNRESET / EPIPE: the server closed the connection for good
            return time.monotonic() - started
        time.sleep(0.05)  # (the trickle's pace, not a wait for something to happen)
    raise AssertionError(f"the server still read the connection after {limit:g} s")


async def test_a_slow_client_cannot_hold_the_lingering_close_open(
    live_servers: Callable[..., LiveServer],
) -> None:
    linger = 1.0
    server = live_servers(env={"JWT_SECRET": SECRET, "LINGER_SECONDS": str(linger)})
    sock, answered = await asyncio.to_thread(_start_slow_upload, server)
    with sock:
        await asyncio.to_thread(_trickle_until_cut, sock, linger + 10)
    cut_after = time.monotonic() - answered
    print(f"cut {cut_after:.2f} s after the 413 (LINGER_SECONDS={linger:g})")
    assert cut_after <= linger + 5, cut_after


async def test_a_lingering_client_does_not_hold_up_the_exit(
    live_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 3.7: exit within DRAIN_SECONDS + 5 s, even with a lingering close far longer
    than that under way (a slow client trickling the rest of an early-answered body)."""
    drain = 1.0
    server = live_servers(
        env={"JWT_SECRET": SECRET, "DRAIN_SECONDS": str(drain), "LINGER_SECONDS": "60"}
    )
    sock, _ = await asyncio.to_thread(_start_slow_upload, server)
    with sock:
        trickling = asyncio.ensure_future(asyncio.to_thread(_trickle_until_cut, sock, 60))
        try:
            took = await server.exit_time(server.sigterm(), drain + 5)
            print(f"exit {took:.2f} s after SIGTERM (DRAIN_SECONDS={drain:g})")
            await asyncio.wait_for(trickling, 10)  # and the client saw its connection end
        finally:
            trickling.cancel()


def _send_and_read(port: int, data: bytes) -> int | str:
    """Send all of `data` in one go, then read the answer: its status, or the socket error."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
            response, _ = read_response(sock, h11.Connection(h11.CLIENT))
        except OSError as exc:
            return type(exc).__name__
        return int(response.status_code)


async def test_a_request_hypercorn_refuses_gets_its_400_despite_the_bytes_behind_it(
    server: LiveServer,
) -> None:
    """A head h11 refuses (here a Content-Length that is no number) is answered 400 and the
    connection closed, while the client is still sending what followed it: the same
    lingering close lets the 400 through."""
    head = b"POST /api/matches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: many\r\n\r\n"
    answers = [
        await asyncio.to_thread(_send_and_read, server.port, head + _json_array(4 * MIB))
        for _ in range(RUNS)
    ]
    assert answers == [400] * RUNS, answers
