"""A resume whose catch-up cannot read the log (Redis gone between the cursor and the resume)
ends cleanly, so the client retries with its cursor; never an error inside the server."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import websockets

from ..clients import WSClient, poll
from ..services import LiveServer, RedisServer

SECRET = "resume-without-redis-0123456789"


@pytest.fixture(name="resumable")
async def _resumable(
    live_servers: Callable[..., LiveServer], own_redis: RedisServer
) -> tuple[LiveServer, str, str]:
    """An instance on a Redis that is then stopped, and a cursor from before that."""
    server = live_servers(env={"REDIS_URL": own_redis.url, "JWT_SECRET": SECRET})
    token = server.token("watcher")
    cursor = (await poll(server.url, "matches", token)).json()["cursor"]
    own_redis.stop()
    return server, token, cursor


async def test_sse_resume_ends_the_stream_cleanly(resumable: tuple[LiveServer, str, str]) -> None:
    server, token, cursor = resumable
    url = f"{server.url}/api/events?rooms=matches&access_token={token}"
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", url, headers={"Last-Event-ID": cursor}) as response,
    ):
        assert response.status_code == 200
        body = b"".join([chunk async for chunk in response.aiter_bytes()])  # a whole body
    assert b"event: stream:open" in body
    assert "Error in ASGI" not in server.log()


async def test_websocket_resume_closes_with_try_again_later(
    resumable: tuple[LiveServer, str, str],
) -> None:
    server, token, cursor = resumable
    async with WSClient(server.url, token) as ws:
        await ws.send({"type": "subscribe", "rooms": ["matches"], "cursor": cursor})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "Error in ASGI" not in server.log()


async def test_websocket_subscribe_while_redis_is_gone_answers_503_and_stays_open(
    live_servers: Callable[..., LiveServer], own_redis: RedisServer
) -> None:
    server = live_servers(env={"REDIS_URL": own_redis.url, "JWT_SECRET": SECRET})
    async with WSClient(server.url, server.token("watcher")) as ws:
        assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
        own_redis.stop()
        answer = await ws.subscribe(["leaderboard:global"])  # needs a board snapshot
        if answer["type"] == "subscribed":  # the snapshot itself follows: from SQL, or a 503
            answer = await ws.recv(timeout=10)
        assert answer.get("event") == "leaderboard:initial" or answer == {
            "type": "error",
            "status": 503,
            "title": "a dependency is unavailable; retry",
        }, answer
        await ws.send({"type": "ping"})
        while (frame := await ws.recv(timeout=10)).get("type") != "pong":
            assert frame.get("type") != "error" or frame.get("status") == 503, frame
    assert "Error in ASGI" not in server.log()
