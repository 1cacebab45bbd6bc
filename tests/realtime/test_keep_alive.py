"""Hypercorn's keep-alive idle timeout as `rankpulse serve` runs it (web/hypercorn_fast.py: a
timer per connection instead of a task): with real processes and raw sockets, an idle
keep-alive connection is closed after KEEP_ALIVE_SECONDS, one mid-request or streaming is
not, and SIGTERM still closes idle connections at once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from ..clients import HttpApi
from ..services import LiveServer

KEEP_ALIVE = 1.0


async def _open(server: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, token: str = ""
) -> bytes:
    """One request on a keep-alive connection; its body (the answer has a Content-Length)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: test\r\n{auth}\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"connection: close" not in head.lower(), head
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await asyncio.wait_for(reader.readexactly(length), 30)


async def _closed_within(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closed the connection (EOF); fails after `limit`."""
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(1), limit) == b"", "bytes on an idle connection"
    return time.monotonic() - started


async def _still_open(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent during `seconds` (the observation period, not a wait for
    something); fails if it closed the connection in that time."""
    received = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            break
        assert chunk, f"closed after {seconds - left:.1f} s of a {seconds} s observation"
        received += chunk
    return received


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(
    shared_servers: Callable[..., LiveServer],
) -> None:
    server = shared_servers(env={"KEEP_ALIVE_SECONDS": str(KEEP_ALIVE)})  # connections of its own
    reader, writer = await _open(server)
    try:
        # Idle right after the connect, and again after each answer on the same connection.
        await _get(reader, writer, "/healthz")
        await _get(reader, writer, "/healthz")
        # Hypercorn's default (5 s) is past the limit: this is KEEP_ALIVE_SECONDS at work.
        waited = await _closed_within(reader, KEEP_ALIVE + 3)
        assert waited >= KEEP_ALIVE * 0.8, f"closed after {waited:.2f} s"
    finally:
        writer.close()
    never_used_reader, never_used = await _open(server)
    try:
        await _closed_within(never_used_reader, KEEP_ALIVE + 3)
    finally:
        never_used.close()


async def test_a_pending_poll_and_a_stream_outlive_the_keep_alive_timeout(
    shared_servers: Callable[..., LiveServer],
) -> None:
    server = shared_servers(env={"KEEP_ALIVE_SECONDS": str(KEEP_ALIVE)})  # connections of its own
    token = server.token("viewer")
    admin = HttpApi(server.url, server.token("ops", "matches:write admin"))
    poll_reader, poll_writer = await _open(server)
    sse_writer: asyncio.StreamWriter | None = None
    try:
        fresh = await _get(poll_reader, poll_writer, "/api/poll?rooms=matches", token)
        cursor = json.loads(fresh)["cursor"]
        # A poll waiting 4 x the keep-alive timeout is answered (empty), on the same socket.
        started = time.monotonic()
        answer = await _get(
            poll_reader,
            poll_writer,
            f"/api/poll?rooms=matches&cursor={cursor}&timeout=4",
            token,
        )
        assert b'"events":[]' in answer and time.monotonic() - started >= 3
        sse_reader, sse_writer = await _open(server)
        sse_writer.write(
            f"GET /api/events?rooms=matches&access_token={token} HTTP/1.1\r\n"
            "Host: test\r\n\r\n".encode()
        )
        opened = await _still_open(sse_reader, KEEP_ALIVE * 4)
        assert opened.startswith(b"HTTP/1.1 200") and b"stream:open" in opened
        await admin.announce("matches", {"n": 7})
        received = b""
        while b'"n":7' not in received:
            chunk = await asyncio.wait_for(sse_reader.read(65536), 30)
            assert chunk, "the stream was closed"
            received += chunk
    finally:
        poll_writer.close()
        if sse_writer is not None:
            sse_writer.close()


async def test_sigterm_closes_idle_keep_alive_connections_at_once(
    live_servers: Callable[..., LiveServer],
) -> None:
    # A keep-alive timeout far beyond the test: only the shutdown can close these.
    server = live_servers(env={"KEEP_ALIVE_SECONDS": "120", "DRAIN_SECONDS": "1"})
    connections = [await _open(server) for _ in range(5)]
    try:
        for reader, writer in connections[:3]:
            await _get(reader, writer, "/healthz")  # idle after an answer; the others never used
        server.stop()
        for reader, _ in connections:
            await _closed_within(reader, 1 + 5)  # DRAIN_SECONDS + 5 s (PROTOCOL 3.7)
    finally:
        for _, writer in connections:
            writer.close()
