"""PROTOCOL 3.5 for rank windows: a connection over its send budget drops its queued windows
with the rest of the board state, and gets the current windows again (fresh, once)."""

from __future__ import annotations

import asyncio
import json

from quart_app.engine.hub import Hub

from .test_hub_budget import BOARD, emit, settle, stalled

WINDOW = "leaderboard:top:3"


async def test_a_conflated_connection_gets_its_windows_again(hub: Hub) -> None:
    conn, sock = await stalled(hub, [BOARD, WINDOW])
    (window,) = await hub.windows.current([WINDOW], conn)
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


async def test_after_a_new_log_every_window_is_sent_again_even_one_read_just_before(
    hub: Hub,
) -> None:
    """A new epoch tells every client stream:reset (drop your state): each window room gets
    its window again, also one re-read within the last coalescing period, whose read comes in
    a later tick than the others' (a flag for the whole first tick missed it)."""
    rooms = ["leaderboard:top:3", "leaderboard:top:5"]
    conns = {room: hub.open("viewer", [room], None) for room in rooms}
    for room, conn in conns.items():
        await hub.windows.current([room], conn)  # as a stream opening gives it
    hub.windows._on_events([])  # the windows learn the log they were read in
    await hub.windows.settled(rooms)
    loop = asyncio.get_running_loop()
    hub.windows._windows[rooms[0]].read_at = loop.time()  # read just now
    hub.windows._windows[rooms[1]].read_at = loop.time() - 1.0  # read a while ago
    hub.epoch = "a-new-log"  # as Hub._new_epoch leaves it
    hub.windows._on_events([])
    for room, conn in conns.items():
        batch = await conn.next_batch(timeout=5)
        assert [e.name for e in batch] == ["leaderboard:window"], room
