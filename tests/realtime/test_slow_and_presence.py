"""Limits a user notices: a slow client is cut off without hurting others; presence counts
players, not tabs; tokens end streams and never reach the logs."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from ..clients import HttpApi, SSEClient, WSClient, log_events, poll
from ..services import LiveServer


async def _online_count(server: LiveServer, token: str) -> int:
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.get("/api/presence", headers={"Authorization": f"Bearer {token}"})
    return int(answer.json()["online_count"])


def _stalled_reader(server: LiveServer, token: str) -> socket.socket:
    """A client that asks for a stream and then never reads: a tiny receive window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /api/events?rooms=matches&access_token={token} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n\r\n".encode()
    )
    return sock


async def test_slow_client_is_cut_off_memory_stays_flat_others_keep_up(live_servers) -> None:  # type: ignore[no-untyped-def]
    # A short log, so what the server retains for resume does not hide what it buffers.
    server = live_servers(env={"SEND_QUEUE_MAX": "50", "EVENT_LOG_SIZE": "100"})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("viewer")
    stalled = _stalled_reader(server, token)
    payload = {"blob": "x" * 15_000}
    count = 1200  # ~18 MB to the stalled client: far beyond socket buffers and its queue
    async with SSEClient(server.url, "matches", token) as healthy:
        await healthy.wait_event("stream:open")
        rss_before = server.rss_kb()
        await admin.announce_many("matches", [{**payload, "n": n} for n in range(count)])
        events = await healthy.wait_for(lambda evs: len(log_events(evs)) >= count, timeout=30)
        received = log_events(events)
        assert [e["data"]["n"] for e in received] == list(range(count))
        rss_growth_mb = (server.rss_kb() - rss_before) / 1024
    # The stalled client was told to go away: draining its socket ends in EOF, and the last
    # frame it got is the slow hint (or the close came while its socket was full).
    stalled.settimeout(10)
    tail = b""
    while chunk := stalled.recv(1 << 20):
        tail = (tail + chunk)[-4096:]
    stalled.close()
    assert b'"event":"stream:reset","data":{"reason":"slow"}' in tail
    assert rss_growth_mb < 8, f"server memory grew {rss_growth_mb:.1f} MB for a stalled client"


async def test_presence_counts_players_not_tabs(live_server: LiveServer) -> None:
    watcher_token = live_server.token("watcher")
    ann = live_server.token("ann")
    async with SSEClient(live_server.url, "presence", watcher_token) as watcher:
        await watcher.wait_for(lambda evs: len(watcher.named("player:online")) == 1)
        tab1 = await SSEClient(live_server.url, "matches", ann).__aenter__()
        await watcher.wait_for(lambda evs: len(watcher.named("player:online")) == 2)
        assert watcher.named("player:online")[1]["data"] == {"player_id": "ann", "online_count": 2}
        async with WSClient(live_server.url, ann) as tab2:
            await tab2.subscribe(["matches"])
            assert await _online_count(live_server, watcher_token) == 2
            await tab1.close()
            # Closing one tab says nothing; the count stays.
            await admin_ping(live_server)
            await watcher.wait_for(lambda evs: any(e["event"] == "announcement" for e in evs))
            assert len(watcher.named("player:offline")) == 0
            assert await _online_count(live_server, watcher_token) == 2
        offline = await watcher.wait_event("player:offline", timeout=2)
        assert offline["data"] == {"player_id": "ann", "online_count": 1}
        assert await _online_count(live_server, watcher_token) == 1
        async with httpx.AsyncClient(base_url=live_server.url) as client:
            player = await client.get(
                "/api/players/ann", headers={"Authorization": f"Bearer {ann}"}
            )
        assert player.status_code == 404  # ann has never played: no board entry
        # Long-polling counts as being online.
        await poll(live_server.url, "matches", live_server.token("carl"), timeout=0)
        online = await watcher.wait_for(
            lambda evs: any(
                e["event"] == "player:online" and e["data"]["player_id"] == "carl" for e in evs
            )
        )
        assert sum(1 for e in online if e["data"].get("player_id") == "carl") == 1


async def admin_ping(server: LiveServer) -> None:
    """A marker in the presence room: everything published before it has been delivered."""
    await HttpApi(server.url, server.token("ops", "admin")).announce("presence", {"marker": 1})


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_stream_ends_when_its_token_expires(
    shared_live_server: LiveServer, transport: str
) -> None:
    live_server = shared_live_server  # its own short token only: one instance for both transports
    token = live_server.token("ann", ttl=2)
    started = time.monotonic()
    if transport == "sse":
        async with SSEClient(live_server.url, "matches", token) as sse:
            await asyncio.wait_for(sse.ended.wait(), 6)
    else:
        async with WSClient(live_server.url, token) as ws:
            await ws.subscribe(["matches"])
            with pytest.raises(Exception) as closed:
                await ws.recv(timeout=6)
            assert closed.value.rcvd.code == 4001  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5


async def test_tokens_never_reach_the_logs(live_servers) -> None:  # type: ignore[no-untyped-def]
    server = live_servers(args=("--access-log",))
    token = server.token("ann")
    async with SSEClient(server.url, "matches", token):
        pass
    async with WSClient(server.url, token) as ws:
        await ws.subscribe(["matches"])
    await poll(server.url, "matches", token, timeout=0)
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.get(f"/api/poll?rooms=matches&timeout=0&access_token={token}")
        await client.get(f"/api/leaderboard?access_token={token}")
    server.stop()
    log = server.log()
    assert "/api/poll" in log  # the access log is on...
    assert token not in log and token[-20:] not in log  # ...and carries no token


async def test_metrics_count_connections_events_and_deliveries(live_server: LiveServer) -> None:
    def series(text: str) -> dict[str, float]:
        return {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }

    admin = HttpApi(live_server.url, live_server.token("ops", "admin"))
    async with SSEClient(live_server.url, "matches", live_server.token("viewer")) as sse:
        await admin.announce("matches", {"n": 1})
        await sse.wait_event("announcement")
        async with httpx.AsyncClient(base_url=live_server.url) as client:
            scraped = series((await client.get("/metrics")).text)
    assert scraped["rankpulse_connections"] == 1
    assert scraped["rankpulse_events_total"] >= 2  # player:online, the announcement
    assert scraped["rankpulse_deliveries_total"] >= 1
    assert scraped["rankpulse_outbox_pending"] == 0
    assert scraped['rankpulse_http_requests_total{method="POST",status="202"}'] == 1
