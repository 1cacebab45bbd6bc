"""PROTOCOL 3 ("An SSE stream or WebSocket ends when its token expires") and `/api/presence`
(online: an open SSE or WebSocket connection) for a WebSocket that never subscribes: online
from its opening, whatever the per-user limit, and ended (offline) when its token expires.
(Found in review: the expiry was enforced by the hub connection, which only the first
subscribe opens, so such a socket outlived its token and, online from its admission, kept
its player online; and with MAX_CONNECTIONS_PER_USER=0 it was online only once subscribed.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..clients import SSEClient, WSClient
from ..services import LiveServer

SECRET = "ws-presence-secret-0123456789abcdef"


async def test_an_unsubscribed_websocket_ends_with_its_token_and_goes_offline(
    live_servers: Callable[..., LiveServer],
) -> None:
    server = live_servers(env={"JWT_SECRET": SECRET, "MAX_CONNECTIONS_PER_USER": "2"})
    watcher = server.token("watcher")

    def transitions(sse: SSEClient) -> list[str]:  # (ann's: the watcher's own may be there)
        events = sse.named("player:online", "player:offline")
        return [e["event"] for e in events if e["data"]["player_id"] == "ann"]

    async with SSEClient(server.url, "presence", watcher) as watching:
        async with WSClient(server.url, server.token("ann", ttl=2)) as ann:  # never subscribes
            await watching.wait_for(lambda _: transitions(watching) == ["player:online"])
            try:  # her token expired 2 s in: the server ends the socket
                await asyncio.wait_for(ann.socket.wait_closed(), 20)
            except TimeoutError:
                raise AssertionError("the WebSocket outlived its token by 18 s") from None
        await watching.wait_for(
            lambda _: transitions(watching) == ["player:online", "player:offline"], 15
        )


async def test_an_open_websocket_is_online_with_the_per_user_limit_off(
    live_servers: Callable[..., LiveServer],
) -> None:
    """/api/presence counts an open WebSocket, subscribed or not; the per-user stream limit
    (MAX_CONNECTIONS_PER_USER=0: off) has nothing to do with it."""
    server = live_servers(env={"JWT_SECRET": SECRET, "MAX_CONNECTIONS_PER_USER": "0"})
    watcher = server.token("watcher")

    def transitions(sse: SSEClient) -> list[str]:
        events = sse.named("player:online", "player:offline")
        return [e["event"] for e in events if e["data"]["player_id"] == "ann"]

    async with SSEClient(server.url, "presence", watcher) as watching:
        async with WSClient(server.url, server.token("ann")):  # open, never subscribes
            await watching.wait_for(lambda _: transitions(watching) == ["player:online"], 10)
        await watching.wait_for(
            lambda _: transitions(watching) == ["player:online", "player:offline"], 15
        )
