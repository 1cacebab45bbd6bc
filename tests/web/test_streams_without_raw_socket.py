"""SSE and WebSocket through plain ASGI `send` (no Hypercorn socket to write to directly, as
under another server or HTTP/2): the same frames, resume and close codes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from quart_app.engine.base import Draft, Publication

from ..helpers import Api


async def _announce(api: Api, n: int) -> None:
    await api.rt.engine.publish(
        Publication(events=(Draft(("matches",), "announcement", {"n": n}),))
    )


async def _frames(connection: Any, count: int) -> list[dict[str, Any]]:
    """Read SSE bytes until `count` events (not comments) arrived; parse their envelopes."""
    buffer = b""
    while buffer.count(b"\ndata: ") < count:
        buffer += await asyncio.wait_for(connection.receive(), 5)
    return [json.loads(line[6:]) for line in buffer.split(b"\n") if line.startswith(b"data: ")]


async def test_sse_through_send_streams_and_resumes(memory_api: Api) -> None:
    token = memory_api.token("viewer")
    client = memory_api.client
    path = f"/api/events?rooms=matches&access_token={token}"
    async with client.request(path) as connection:
        await connection.send_complete()
        opened = (await _frames(connection, 1))[0]
        assert opened["event"] == "stream:open"
        await _announce(memory_api, 1)
        await _announce(memory_api, 2)
        events = await _frames(connection, 2)  # the rest of the buffer: n 1 and 2
        cursor = events[-1]["id"] if events[-1]["event"] == "announcement" else None
        await connection.disconnect()
    assert cursor is not None
    await _announce(memory_api, 3)
    async with client.request(path, headers={"Last-Event-ID": cursor}) as connection:
        await connection.send_complete()
        frames = await _frames(connection, 2)
        await connection.disconnect()
    assert [f["event"] for f in frames] == ["stream:open", "announcement"]
    assert frames[1]["data"] == {"n": 3}


async def test_websocket_through_send_delivers_and_pongs(memory_api: Api) -> None:
    token = memory_api.token("viewer")
    async with memory_api.client.websocket(f"/api/ws?access_token={token}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "rooms": ["matches"]}))
        assert json.loads(await ws.receive()) == {"type": "subscribed", "rooms": ["matches"]}
        await _announce(memory_api, 7)
        envelope = json.loads(await asyncio.wait_for(ws.receive(), 5))
        assert (envelope["event"], envelope["data"]) == ("announcement", {"n": 7})
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.receive(), 5)) == {"type": "pong"}
