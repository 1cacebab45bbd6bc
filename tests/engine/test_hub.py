"""The hub on the memory engine: fan-out, the resume seam, bounded queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from quart_app.engine.base import Draft, Publication
from quart_app.engine.hub import Closed, Hub, Reset
from quart_app.engine.memory import MemoryEngine


@pytest.fixture(name="hub")
async def _hub() -> AsyncIterator[Hub]:
    engine = MemoryEngine(event_log_size=100)
    await engine.start()
    hub = Hub(engine, queue_limit=10)
    await hub.start()
    yield hub
    await hub.stop()
    await engine.stop()


async def say(hub: Hub, *rooms: str, n: int = 0) -> None:
    await hub.engine.publish(Publication(events=(Draft(tuple(rooms), "announcement", {"n": n}),)))


async def test_an_event_in_several_rooms_reaches_a_connection_once(hub: Hub) -> None:
    both = hub.open("ann", ["matches", "match:m1"], None)
    one = hub.open("bob", ["match:m1"], None)
    other = hub.open("cy", ["presence"], None)
    await say(hub, "matches", "match:m1", "player:ann")
    assert [e.name for e in await both.next_batch(1)] == ["announcement"]
    assert [e.name for e in await one.next_batch(1)] == ["announcement"]
    assert await other.next_batch(0.05) == []
    # The same Event object, encoded once, serves every receiver.
    await say(hub, "matches", "match:m1", n=1)
    first, second = (await both.next_batch(1))[0], (await one.next_batch(1))[0]
    assert first is second and first.sse is second.sse


async def test_resume_seam_has_no_gap_and_no_repeat(hub: Hub) -> None:
    for n in range(5):
        await say(hub, "matches", n=n)
    conn = hub.open(None, ["matches"], None, after_seq=2)
    # Published after registration but before the catch-up read: both in the log and queued.
    for n in range(5, 8):
        await say(hub, "matches", n=n)
    seen: list[int] = []
    while len(seen) < 6:
        seen += [e.seq for e in await conn.next_batch(1)]
    assert seen == [3, 4, 5, 6, 7, 8]  # seqs start at 1
    await say(hub, "matches", n=8)
    assert [e.seq for e in await conn.next_batch(1)] == [9]


async def test_catch_up_skips_other_rooms_and_pages(hub: Hub) -> None:
    for n in range(60):
        await say(hub, "matches" if n % 3 == 0 else "presence", n=n)
    conn = hub.open(None, ["matches"], None, after_seq=0)
    seen: list[int] = []
    while len(seen) < 20:
        seen += [e.seq for e in await conn.next_batch(1)]
    assert seen == list(range(1, 61, 3))


async def test_a_cursor_older_than_the_log_is_reset(hub: Hub) -> None:
    for n in range(150):  # the log keeps 100
        await say(hub, "matches", n=n)
    conn = hub.open(None, ["matches"], None, after_seq=10)
    with pytest.raises(Reset) as reset:
        await conn.next_batch(1)
    assert reset.value.reason == "expired"
    await say(hub, "matches", n=999)
    assert [e.seq for e in await conn.next_batch(1)] == [151]  # live from the head on


async def test_a_slow_connection_is_closed_and_its_queue_freed(hub: Hub) -> None:
    slow = hub.open(None, ["matches"], None)
    for n in range(11):
        await say(hub, "matches", n=n)
    assert slow.closed == "slow"
    with pytest.raises(Closed) as closed:
        await slow.next_batch(1)
    assert closed.value.reason == "slow"
    assert slow.id not in hub.connections and "matches" not in hub.rooms


async def test_a_waiting_connection_is_woken_and_an_expired_one_closed(hub: Hub) -> None:
    conn = hub.open("ann", ["matches"], expires_at=time.time() + 1.2)
    waiting = asyncio.create_task(conn.next_batch())
    await asyncio.sleep(0)
    await say(hub, "matches")
    assert [e.name for e in await asyncio.wait_for(waiting, 1)] == ["announcement"]
    with pytest.raises(Closed) as closed:
        await asyncio.wait_for(conn.next_batch(), 5)
    assert closed.value.reason == "expired"
