"""The bytes on the wire, read with raw sockets against a real `rankpulse serve`: what an HTTP
client library would hide (a body after a HEAD response, a frame after a WebSocket Close)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time

import h11

from ..clients import HttpApi
from ..http_wire import read_response
from ..services import LiveServer


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


async def test_head_of_the_event_stream_is_headers_only_and_keeps_the_connection_usable(
    live_server: LiveServer,
) -> None:
    token = live_server.token("viewer")
    with _connect(live_server) as sock:
        await _head_then_healthz(sock, token)


async def _head_then_healthz(sock: socket.socket, token: str) -> None:
    conn = h11.Connection(h11.CLIENT)
    target = f"/api/events?rooms=matches,leaderboard:global&access_token={token}"
    host = ("Host", "127.0.0.1")
    sock.sendall(conn.send(h11.Request(method="HEAD", target=target, headers=[host])))
    sock.sendall(conn.send(h11.EndOfMessage()))
    head, body = await asyncio.to_thread(read_response, sock, conn)
    assert head.status_code == 200 and body == b""
    headers = {k.decode(): v.decode() for k, v in head.headers}
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    conn.start_next_cycle()
    # The same keep-alive connection: the next response must parse cleanly.
    sock.sendall(conn.send(h11.Request(method="GET", target="/healthz", headers=[host])))
    sock.sendall(conn.send(h11.EndOfMessage()))
    health, _ = await asyncio.to_thread(read_response, sock, conn)
    assert health.status_code == 200


# --- WebSocket, by hand ----------------------------------------------------------------------
def _ws_open(server: LiveServer, token: str) -> tuple[socket.socket, bytes]:
    sock = _connect(server)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /api/ws?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest


def _client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + masked


def _server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Parse unmasked server frames: ([(opcode, payload)], the incomplete tail)."""
    frames = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if size == 126:
            if len(data) < 4:
                break
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                break
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            break
        frames.append((opcode, data[offset : offset + size]))
        data = data[offset + size :]
    return frames, data


def _read_until_eof(sock: socket.socket, first: bytes, limit: float) -> bytes:
    data, deadline = first, time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _after_close(data: bytes) -> tuple[int | None, list[tuple[int, bytes]]]:
    frames, tail = _server_frames(data)
    for index, (opcode, payload) in enumerate(frames):
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            return code, frames[index + 1 :] + ([(-1, tail)] if tail else [])
    return None, []


async def test_no_frame_follows_a_websocket_close_during_a_burst(live_servers) -> None:  # type: ignore[no-untyped-def]
    """Clients close (a Close frame, or a frame too large: the server closes) while events
    flow: whatever the server wrote before its Close, nothing may follow it."""
    server = live_servers(env={"SEND_QUEUE_MAX": "100000"})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("viewer")
    subscribe = json.dumps({"type": "subscribe", "rooms": ["matches"]}).encode()
    stop = asyncio.Event()

    async def burst() -> None:
        n = 0
        while not stop.is_set():
            await admin.announce_many("matches", [{"n": n + i} for i in range(50)])
            n += 50

    publisher = asyncio.create_task(burst())
    try:
        for round_ in range(16):
            sock, rest = await asyncio.to_thread(_ws_open, server, token)
            sock.sendall(_client_frame(0x1, subscribe))
            # Let events flow to it for a moment, then close in one of two ways.
            got = rest
            while got.count(b'"announcement"') < 20:
                got += await asyncio.to_thread(sock.recv, 1 << 20)
            if round_ % 2:
                sock.sendall(_client_frame(0x8, struct.pack("!H", 1000)))
            else:
                sock.sendall(_client_frame(0x1, b"[" + b"0," * 40_000 + b"0]"))
            data = await asyncio.to_thread(_read_until_eof, sock, got, 10)
            sock.close()
            code, after = _after_close(data)
            assert code in (1000, 1009), code
            assert after == [], f"round {round_}: {len(after)} frame(s) after the Close"
    finally:
        stop.set()
        await publisher
