"""The Redis engine's rebuild marker: one automatic rebuild at a time across instances, an
operator's rebuild takes over, and a rebuilder that died stops holding the others back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from quart_app.engine.base import BoardEntry
from quart_app.engine.redis import RedisEngine

from .conftest import rows

MakeRedis = Callable[..., Awaitable[RedisEngine]]
ENTRIES = [BoardEntry(f"p{i:03d}", f"P{i}", 1000.0 + i, 0, 0, 0, 0, 1) for i in range(50)]


def held_load(
    started: asyncio.Event, gate: asyncio.Event
) -> Callable[[], Awaitable[list[BoardEntry]]]:
    async def load() -> list[BoardEntry]:
        started.set()
        await gate.wait()
        return list(ENTRIES)

    return load


async def test_an_automatic_rebuild_declines_while_another_runs(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    started, gate = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(a.board_replace(held_load(started, gate)))
    await asyncio.wait_for(started.wait(), 10)

    assert await b.board_replace(rows(ENTRIES[0]), take_over=False) is False
    gate.set()
    assert await asyncio.wait_for(first, 10) is True  # not superseded
    _, total = await b.board_page(0, 0)
    assert total == len(ENTRIES)


async def test_an_operators_rebuild_takes_over_a_running_one(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    started, gate = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(a.board_replace(held_load(started, gate)))
    await asyncio.wait_for(started.wait(), 10)

    assert await b.board_replace(rows(ENTRIES[0])) is True
    gate.set()
    with pytest.raises(RuntimeError, match="rebuild"):  # taken over (its marker replaced)
        await asyncio.wait_for(first, 10)
    page, total = await a.board_page(0, 10)
    assert total == 1 and page[0][1] == ENTRIES[0]


async def test_a_long_rebuild_keeps_its_marker_past_the_ttl(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    # Renewed every third of its lifetime: 2 s leaves a loaded machine (two test workers on
    # two cores) 1.3 s to run a renewal late; 1 s was once not enough in a clean-clone run.
    a._board.rebuild_ttl_ms = 2000
    started, gate = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(a.board_replace(held_load(started, gate)))
    await asyncio.wait_for(started.wait(), 10)
    deadline = asyncio.get_running_loop().time() + 6.0  # three lifetimes of the marker
    while asyncio.get_running_loop().time() < deadline:
        assert await b.board_replace(rows(ENTRIES[0]), take_over=False) is False
        await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.wait_for(first, 10) is True
    assert (await b.board_page(0, 0))[1] == len(ENTRIES)


async def test_a_dead_rebuilders_marker_expires(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    a._board.rebuild_ttl_ms = 300
    started, gate = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(a.board_replace(held_load(started, gate)))
    await asyncio.wait_for(started.wait(), 10)
    first.cancel()  # the instance dies mid-rebuild: nobody renews its marker
    with pytest.raises(asyncio.CancelledError):
        await first

    async def rebuilt() -> bool:
        return await b.board_replace(rows(*ENTRIES[:3]), take_over=False)

    async with asyncio.timeout(5):
        while not await rebuilt():
            await asyncio.sleep(0.05)
    assert (await b.board_page(0, 0))[1] == 3
