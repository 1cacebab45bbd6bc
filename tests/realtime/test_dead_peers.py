"""PROTOCOL 3.6: a dead peer is found within 60 s on every transport, with real processes.

A client that vanishes without a FIN must not stay counted (and held) by the server:
- WebSocket, behind the fault proxy switched to blackhole (the connection stays up, nothing
  gets through): the server's pings go unanswered and it closes the socket.
- SSE, a client whose socket disappears without a word (TCP_REPAIR: the kernel forgets it
  and sends nothing): the next heartbeat write fails and the stream is gone.
- Long-poll, behind the blackholed proxy: nothing accumulates past the poll's timeout.
Short settings keep each test to seconds; the defaults are checked against 60 s.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from quart_app.config import load_settings
from quart_app.loadtest.wire import Target, request, ws_frame, ws_key

from ..faults import FaultProxy
from ..services import LiveServer

FAST = {
    "HEARTBEAT_SECONDS": "2",
    "WS_PING_SECONDS": "2",
    "WS_PING_TIMEOUT_SECONDS": "3",
    "TCP_USER_TIMEOUT_SECONDS": "5",
}
TCP_REPAIR = getattr(socket, "TCP_REPAIR", 19)


@pytest.fixture(name="server")
def _server(live_servers: Callable[..., LiveServer]) -> LiveServer:
    return live_servers(env=FAST)


@pytest.fixture(name="proxy")
def _proxy(server: LiveServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server.port).start()
    yield proxy
    proxy.stop()


class Scraper:
    """Reads /metrics over one kept-alive connection (a connection per scrape would itself
    leave tasks behind on the server for its keep-alive timeout)."""

    def __init__(self, server: LiveServer) -> None:
        self.client = httpx.AsyncClient(base_url=server.url, timeout=10)

    async def gauge(self, name: str) -> float:
        text = (await self.client.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    async def until(self, name: str, want: Callable[[float], bool], timeout: float) -> float:
        """Seconds until the gauge satisfied `want` (fails after `timeout`)."""
        started = time.monotonic()
        while not want(value := await self.gauge(name)):
            assert time.monotonic() - started < timeout, f"{name} still {value} after {timeout:g} s"
            await asyncio.sleep(0.2)
        return time.monotonic() - started


@pytest.fixture(name="metrics")
async def _metrics(server: LiveServer) -> AsyncIterator[Scraper]:
    scraper = Scraper(server)
    yield scraper
    await scraper.client.aclose()


async def _open(
    port: int, raw: bytes, until: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    seen = b""
    while until not in seen:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, seen
        seen += data
    return reader, writer


def test_defaults_find_a_dead_peer_within_60_seconds() -> None:
    settings = load_settings()
    assert settings.ws_ping_seconds + settings.ws_ping_timeout_seconds + 1 <= 60
    assert settings.heartbeat_seconds + settings.tcp_user_timeout_seconds + 1 <= 60


async def test_websocket_peer_behind_a_blackhole_is_closed(
    server: LiveServer, proxy: FaultProxy, metrics: Scraper
) -> None:
    token = server.token("viewer")
    headers = {
        "Authorization": f"Bearer {token}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": ws_key(),
        "Sec-WebSocket-Version": "13",
    }
    target = Target("http", "127.0.0.1", proxy.port, "")
    reader, writer = await _open(
        proxy.port, request("GET", target, "/api/ws", headers), b"\r\n\r\n"
    )
    subscribe = json.dumps({"type": "subscribe", "rooms": ["matches"]}).encode()
    writer.write(ws_frame(1, subscribe, mask=b"abcd"))
    await metrics.until("rankpulse_connections", lambda v: v == 1, 10)
    # Alive while it answers: pings come and the (client-side) pongs go back for a while.
    pings = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except TimeoutError:
            break
        pings += data.count(b"\x89\x00")
        if b"\x89\x00" in data:
            writer.write(ws_frame(10, b"", mask=b"abcd"))
    assert pings >= 1, "the server sent no ping"
    assert await metrics.gauge("rankpulse_connections") == 1, "an answering peer was closed"

    proxy.blackhole()  # the client vanishes: no FIN, no RST, nothing gets through
    took = await metrics.until("rankpulse_connections", lambda v: v == 0, 20)
    # ping every 2 s + 3 s to answer (+ the 1 s tick): found in well under 60 s
    assert took <= 2 + 3 + 2 + 2
    writer.transport.abort()


async def test_sse_peer_that_vanished_without_a_fin_is_dropped(
    server: LiveServer, metrics: Scraper
) -> None:
    token = server.token("viewer")
    target = Target("http", "127.0.0.1", server.port, "")
    path = "/api/events?rooms=matches"
    reader, writer = await _open(
        server.port,
        request("GET", target, path, {"Authorization": f"Bearer {token}"}),
        b"stream:open",
    )
    await metrics.until("rankpulse_connections", lambda v: v == 1, 10)
    # TCP_REPAIR (root): closing the socket then sends nothing, no FIN, no RST; the server
    # only learns the peer is gone when it writes to it (the heartbeat) and hears RST.
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    writer.transport.abort()
    took = await metrics.until("rankpulse_connections", lambda v: v == 0, 20)
    assert took <= 2 + 1 + 3  # within a heartbeat period, plus its tick


async def test_abandoned_long_polls_do_not_accumulate(
    server: LiveServer, proxy: FaultProxy, metrics: Scraper
) -> None:
    baseline = await metrics.gauge("rankpulse_asyncio_tasks")
    token = server.token("viewer")
    target = Target("http", "127.0.0.1", proxy.port, "")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        cursor = (
            await client.get(
                "/api/poll",
                params={"rooms": "matches"},
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()["cursor"]
    writers = []
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        path = f"/api/poll?rooms=matches&cursor={cursor}&timeout=3"
        writer.write(request("GET", target, path, {"Authorization": f"Bearer {token}"}))
        writers.append(writer)
    await metrics.until("rankpulse_asyncio_tasks", lambda v: v >= baseline + 20, 10)
    proxy.blackhole()  # every poller vanishes while waiting
    # Each poll ends at its timeout (3 s); its idle keep-alive connection after Hypercorn's
    # keep-alive timeout (5 s): then nothing is left of them.
    took = await metrics.until("rankpulse_asyncio_tasks", lambda v: v <= baseline + 2, 30)
    assert took <= 3 + 5 + 5
    for writer in writers:
        writer.transport.abort()
