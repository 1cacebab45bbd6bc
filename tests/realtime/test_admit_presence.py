"""An SSE stream's admission and its presence in one Redis round trip (engine
`stream_admit_and_enter`), with real processes on a real Redis: an admitted stream makes its
player online, a stream refused with 429 changes no one's presence, and a stream that ends
takes its player offline."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ..clients import SSEClient, WSClient
from ..services import LiveServer

SECRET = "admit-presence-secret-0123456789"


async def _online_count(server: LiveServer, token: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        answer = await client.get("/api/presence", headers={"Authorization": f"Bearer {token}"})
    return int(answer.json()["online_count"])


async def test_refused_stream_changes_no_presence_and_admitted_one_does(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, "MAX_CONNECTIONS_PER_USER": "1"}
    a, b = live_servers(env=env), live_servers(env=env)
    watcher = b.token("watcher")
    ann = a.token("ann")

    def transitions(sse: SSEClient) -> list[tuple[str, object]]:
        events = sse.named("player:online", "player:offline")
        return [(e["event"], e["data"]["player_id"]) for e in events]

    async with SSEClient(b.url, "presence", watcher) as watching:
        # The watcher is online from its admission, before its stream starts: its own
        # player:online precedes the stream (the page reads /api/presence once open).
        assert watching.status == 200
        assert await _online_count(b, watcher) == 1
        async with SSEClient(a.url, "matches", ann) as first:
            assert first.status == 200
            await watching.wait_for(lambda _: transitions(watching) == [("player:online", "ann")])
            for server in (b, a):  # at her limit: refused on either instance
                async with SSEClient(server.url, "matches", ann) as refused:
                    assert refused.status == 429
            assert await _online_count(b, watcher) == 2
        # Her one admitted stream closed: offline (a refused one counted would keep her on).
        await watching.wait_for(
            lambda _: transitions(watching)[1:] == [("player:offline", "ann")], 15
        )
        assert await _online_count(b, watcher) == 1


async def test_an_open_websocket_is_online_before_it_subscribes_and_counted_once(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    """PROTOCOL (`/api/presence`): a player with an open WebSocket is online, subscribed or
    not. Entered with the admission (one round trip), taken over by the first subscribe:
    subscribing and closing neither count the player twice nor leave them online."""
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, "MAX_CONNECTIONS_PER_USER": "2"}
    a, b = live_servers(env=env), live_servers(env=env)
    watcher = b.token("watcher")

    def transitions(sse: SSEClient) -> list[tuple[str, object]]:
        events = sse.named("player:online", "player:offline")
        return [(e["event"], e["data"]["player_id"]) for e in events]

    async with SSEClient(b.url, "presence", watcher) as watching:
        assert await _online_count(b, watcher) == 1
        async with WSClient(a.url, a.token("ann")):  # open, never subscribes
            await watching.wait_for(lambda _: transitions(watching) == [("player:online", "ann")])
            assert await _online_count(b, watcher) == 2
        await watching.wait_for(
            lambda _: transitions(watching)[1:] == [("player:offline", "ann")], 15
        )
        async with WSClient(a.url, a.token("bo")) as bo:
            assert (await bo.subscribe(["matches"]))["type"] == "subscribed"
            assert (await bo.subscribe(["presence"]))["type"] == "subscribed"
            await watching.wait_for(
                lambda _: transitions(watching)[2:] == [("player:online", "bo")]
            )
            assert await _online_count(b, watcher) == 2
        await watching.wait_for(
            lambda _: transitions(watching)[3:] == [("player:offline", "bo")], 15
        )
        assert await _online_count(b, watcher) == 1
