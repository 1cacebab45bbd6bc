"""PROTOCOL 3.5 for rank windows: a connection over its send budget drops its queued windows
with the rest of the board state, and gets the current windows again (fresh, once)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from quart_app.engine.hub import Hub
from quart_app.engine.memory import MemoryEngine

from .test_hub_budget import BOARD, emit, settle, stalled

WINDOW = "leaderboard:top:3"


@pytest.fixture(name="hub")
async def _hub() -> AsyncIterator[Hub]:
    engine = MemoryEngine()
    await engine.start()
    hub = Hub(engine, queue_limit=1000, queue_bytes=20_000)
    await hub.start()
    yield hub
    await hub.stop()
    await engine.stop()


async def test_a_conflated_connection_gets_its_windows_again(hub: Hub) -> None:
    (window,) = await hub.windows.current([WINDOW])
    conn, sock = await stalled(hub, [BOARD, WINDOW])
    conn.push(window)  # queued behind the stalled socket, like a window pushed on a change
    for n in range(30):  # ~1 KB board updates: past the 20,000-byte budget
        await emit(hub, BOARD, "leaderboard:update", n=n, blob="u" * 1000)
    await settle()
    assert conn.closed is None
    sock.drained()
    await settle()
    sent = [json.loads(event.text) for event in sock.written if event.text]
    names = [e["event"] for e in sent]
    assert names.count("leaderboard:initial") == 1  # the conflated snapshot
    assert names.count("leaderboard:window") == 1, names
    assert next(e for e in sent if e["event"] == "leaderboard:window")["rooms"] == [WINDOW]
